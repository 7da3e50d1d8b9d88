"""The label head's training: time and held-out loss, NumPy (what the builder runs) vs TensorFlow (JSON).

The head is trained by hand-written NumPy (MLP + Adam, gradients checked in tests/test_labelhead.py).
TensorFlow is already a dependency, so this measures whether training the same network on the same
batches with TF would be faster or better: the split is ``echovids eval``'s (seeded 10 % hold-out
of the clips), the training arrays and sample budget are the builder's, and the loss is the head's
objective on one 5-second window of each held-out clip (the query the head sees at search time).

usage: python bench/labelhead.py [--seed 0] [--tensorflow] [--audioset DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core import labelhead  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.evaluate import load_records, make_windows, split  # noqa: E402


def _arrays(records, idx):
    lens = np.array([len(records[i].embeddings) for i in idx], dtype=np.int64)
    first = np.zeros(len(idx), dtype=np.int64)
    first[1:] = np.cumsum(lens)[:-1]
    vectors = np.concatenate([records[i].embeddings for i in idx]).astype(np.uint8)
    y = np.zeros((len(idx), labelhead.N_LABELS), dtype=np.uint8)
    for j, i in enumerate(idx):
        y[j, list(records[i].labels)] = 1
    return vectors, first, lens, y


def _held_out_loss(head, windows, records) -> float:
    x = np.stack([labelhead._features(q).mean(0) for _i, _s, q in windows])
    x = (x - head.mean) / head.scale
    y = np.zeros((len(windows), head.n_labels), dtype=np.float32)
    for j, (i, _s, _q) in enumerate(windows):
        y[j, list(records[i].labels)] = 1
    return labelhead.bce_loss([head.w1, head.b1, head.w2, head.b2], x, y)


def _train_tensorflow(vectors, first, lens, y, samples, *, hidden=256, batch=1024, lr=3e-3, weight_decay=1e-4,
                      seed=0):
    """The same network, initialisation, batches and objective as train_window_head, fitted by TF's Adam."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)  # the same draws, in the same order, as train_window_head
    data = labelhead.window_batches(vectors, first, lens, y, batch=batch, rng=rng)
    params = [tf.Variable(p) for p in labelhead.init_params(data.n_in, data.n_labels, data.prior, hidden, rng)]
    steps = int(np.ceil(samples / batch))
    schedule = tf.keras.optimizers.schedules.CosineDecay(lr, steps)
    opt = tf.keras.optimizers.Adam(schedule, epsilon=1e-8)

    @tf.function(input_signature=[tf.TensorSpec([None, data.n_in], tf.float32),
                                  tf.TensorSpec([None, data.n_labels], tf.float32)])
    def step(x, t):
        with tf.GradientTape() as tape:
            z = tf.nn.relu(x @ params[0] + params[1]) @ params[2] + params[3]
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=z)
            loss = tf.reduce_sum(bce) / tf.cast(tf.shape(x)[0], tf.float32)
            loss += 0.5 * weight_decay * (tf.reduce_sum(params[0] ** 2) + tf.reduce_sum(params[2] ** 2))
        opt.apply_gradients(zip(tape.gradient(loss, params), params))

    for i in range(1, steps + 1):
        xb, yb = data.sample(i)
        step(xb, yb)
    w1, b1, w2, b2 = (p.numpy() for p in params)
    return labelhead.LabelHead(w1, b1, w2, b2, data.mean, data.scale, data.prior)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--tensorflow", action="store_true", help="also train with TensorFlow and compare")
    ap.add_argument("--audioset", action="append", default=[])
    args = ap.parse_args()
    dirs = args.audioset or list(load_settings().audioset_dirs)
    records = load_records(dirs)
    train_idx, held_idx = split(records, args.seed, args.holdout)
    vectors, first, lens, y = _arrays(records, train_idx)
    windows = make_windows(records, held_idx, args.seed)
    samples = int(min(400_000, max(20_000, 20 * len(train_idx))))  # the builder's budget
    out: dict = {"loadavg_start": os.getloadavg(), "train_clips": len(train_idx), "held_out_clips": len(held_idx),
                 "samples": samples}
    # The floor to beat: a head that says each label's training frequency whatever it hears.
    prior = y.mean(0, dtype=np.float64).astype(np.float32)
    logit = np.log(np.clip(prior, 1e-4, 0.5) / (1 - np.clip(prior, 1e-4, 0.5)))
    base = labelhead.LabelHead(np.zeros((128, 1), np.float32), np.zeros(1, np.float32), np.zeros((1, len(prior)), np.float32),
                               logit, np.zeros(128, np.float32), np.ones(128, np.float32), prior)
    out["held_out_loss_base_rates"] = round(_held_out_loss(base, windows, records), 4)

    t, c = time.perf_counter(), time.process_time()
    head = labelhead.train_window_head(vectors, first, lens, y, samples=samples, seed=args.seed)
    out["numpy"] = {"train_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2),
                    "held_out_loss": round(_held_out_loss(head, windows, records), 4)}
    if args.tensorflow:
        import tensorflow as tf  # imported before timing: the import is paid once per process anyway

        _ = tf.constant(0)
        t, c = time.perf_counter(), time.process_time()
        tf_head = _train_tensorflow(vectors, first, lens, y, samples, seed=args.seed)
        out["tensorflow"] = {"train_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2),
                             "held_out_loss": round(_held_out_loss(tf_head, windows, records), 4)}
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

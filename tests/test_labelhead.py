"""The label head's hand-written training: its gradients are the loss's, and it learns from clips it
never saw at training time (real bal_train data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.labelhead import (
    LabelHead,
    _features,
    bce_loss,
    loss_gradients,
    train_label_head,
    train_window_head,
)
from core.index.tfrecord import read_shard
from tests.index_fixtures import small_shards


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    n_in, hidden, n_labels, rows = 6, 5, 4, 9
    params = [rng.standard_normal((n_in, hidden)), rng.standard_normal(hidden) * 0.1,
              rng.standard_normal((hidden, n_labels)), rng.standard_normal(n_labels) * 0.1]
    x = rng.standard_normal((rows, n_in))
    y = (rng.random((rows, n_labels)) < 0.3).astype(np.float64)
    pre = x @ params[0] + params[1]
    assert np.abs(pre).min() > 1e-3  # no ReLU kink within the finite-difference step
    decay = 0.05
    grads = loss_gradients(params, x, y, decay)
    eps = 1e-6
    for p, g in zip(params, grads):
        assert g.shape == p.shape
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + eps
            up = bce_loss(params, x, y, decay)
            p[i] = keep - eps
            down = bce_loss(params, x, y, decay)
            p[i] = keep
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


def _clips(bal_train_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    records = [r for shard in small_shards(bal_train_dir) for r in read_shard(shard) if len(r.embeddings)]
    labels = np.zeros((len(records), 527), dtype=np.uint8)
    for i, r in enumerate(records):
        labels[i, list(r.labels)] = 1
    return [np.asarray(r.embeddings, dtype=np.uint8) for r in records], labels


def _held_out_loss(head: LabelHead, clips: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean BCE of the head on whole held-out clips (the mean of their seconds, as predict_clip sees them)."""
    x = np.stack([_features(c).mean(0) for c in clips])
    x = (x - head.mean) / head.scale
    return bce_loss([head.w1, head.b1, head.w2, head.b2], x, labels.astype(np.float32))


def _base_rate_loss(prior: np.ndarray, labels: np.ndarray) -> float:
    """The same loss for a predictor that says each label's training frequency, whatever it hears."""
    pr = np.clip(prior.astype(np.float64), 1e-4, 1 - 1e-4)
    b = np.log(pr / (1 - pr))
    return float((np.logaddexp(0.0, b) - labels * b).sum() / len(labels))


def test_window_head_training_lowers_the_loss_on_held_out_clips(bal_train_dir: Path):
    clips, labels = _clips(bal_train_dir)
    order = np.random.default_rng(0).permutation(len(clips))
    cut = int(0.8 * len(clips))
    train, held = order[:cut], order[cut:]
    vectors = np.concatenate([clips[i] for i in train])
    lens = np.array([len(clips[i]) for i in train])
    first = np.concatenate([[0], np.cumsum(lens)[:-1]])

    short = train_window_head(vectors, first, lens, labels[train], samples=2_048, seed=1)
    trained = train_window_head(vectors, first, lens, labels[train], samples=100_000, seed=1)

    held_clips, held_labels = [clips[i] for i in held], labels[held]
    base = _base_rate_loss(trained.prior, held_labels)
    after_two_steps = _held_out_loss(short, held_clips, held_labels)
    after = _held_out_loss(trained, held_clips, held_labels)
    # It learns what the clips sound like, not only how common each label is, and more training
    # keeps helping on clips it never saw.
    assert after < 0.9 * base, (after, base)
    assert after < after_two_steps, (after, after_two_steps)


def test_per_second_training_accepts_label_lists_and_fits_its_rows():
    rng = np.random.default_rng(2)
    centres = rng.integers(40, 216, (3, 128))
    rows = np.concatenate([np.clip(c + rng.normal(0, 12, (200, 128)), 0, 255) for c in centres]).astype(np.uint8)
    row_labels = [[k] for k in range(3) for _ in range(200)]
    head = train_label_head(rows, row_labels, n_labels=3, hidden=16, epochs=5, batch=64)
    assert (head.predict(rows).argmax(1) == np.repeat(np.arange(3), 200)).mean() > 0.95

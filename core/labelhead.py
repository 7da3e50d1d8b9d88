"""A small learned label head: per-second uint8 AudioSet vector → 527 label probabilities.

Why: AudioSet vectors of the same *kind* of sound are far apart in raw Euclidean space (the seed
projects' weakness), while a multi-label classifier trained on the index's own clip labels maps
a query into the label space where "sounds like" is measured. Search then ranks indexed segments
by how well their known labels fit the query's predicted labels (see core.search), and the
per-row probabilities are stored in the build for the YAMNet label bridge and ``--text``.

A plain NumPy MLP (one hidden ReLU layer, sigmoid outputs, binary cross-entropy, Adam) keeps the
head dependency-free and fast to train at build time; it is trained only on indexed clips. Its
hand-derived gradients are checked against finite differences (tests/test_labelhead.py). Training
the same network on the same batches with TensorFlow was measured (bench/labelhead.py): the same
held-out loss, at best twice as fast on a loaded machine, but it would load TensorFlow (2.5 s and
hundreds of MB) into a build that otherwise never imports it, so NumPy stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_LABELS = 527
#: Rows sampled for training at most (bal_train has 220 k; full AudioSet 20.8 M).
MAX_TRAIN_ROWS = 600_000


def _features(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.float32) * np.float32(4.0 / 255.0) - np.float32(2.0)


@dataclass
class LabelHead:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    prior: np.ndarray  # label frequency in the training rows (for idf-style weights)

    @property
    def n_labels(self) -> int:
        return int(self.w2.shape[1])

    def logits(self, q_u8: np.ndarray) -> np.ndarray:
        x = (_features(np.atleast_2d(q_u8)) - self.mean) / self.scale
        h = np.maximum(x @ self.w1 + self.b1, 0)
        return h @ self.w2 + self.b2

    def predict(self, q_u8: np.ndarray) -> np.ndarray:
        """uint8 [n,128] → float32 [n, 527] independent label probabilities."""
        z = self.logits(q_u8)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def predict_clip(self, q_u8: np.ndarray) -> np.ndarray:
        """One probability vector for a whole query (several seconds): the head on their mean."""
        x = (_features(np.atleast_2d(q_u8)).mean(0, keepdims=True) - self.mean) / self.scale
        z = (np.maximum(x @ self.w1 + self.b1, 0) @ self.w2 + self.b2)[0]
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2, mean=self.mean, scale=self.scale,
                 prior=self.prior)

    @classmethod
    def load(cls, path: Path) -> LabelHead:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in ("w1", "b1", "w2", "b2", "mean", "scale", "prior")})


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and scale of the training features (the head's input normalisation)."""
    return x.mean(0), x.std(0) + 1e-3


def init_params(n_in: int, n_labels: int, prior: np.ndarray, hidden: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """He-initialised hidden layer; output biases at the label priors' log-odds, so training starts
    from "predict each label's base rate" instead of spending its first steps learning that."""
    w1 = (rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = (rng.standard_normal((hidden, n_labels)) * np.sqrt(1.0 / hidden)).astype(np.float32)
    pr = np.clip(prior, 1e-4, 0.5)
    b2 = np.log(pr / (1 - pr)).astype(np.float32)
    return [w1, b1, w2, b2]


def bce_loss(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, weight_decay: float = 0.0) -> float:
    """The objective training minimises: binary cross-entropy summed over labels, averaged over rows,
    plus ``weight_decay / 2`` times the squared weights (biases are not decayed)."""
    w1, b1, w2, b2 = params
    z = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    per = np.logaddexp(0.0, z) - y * z  # -[y log p + (1-y) log(1-p)], stable for any z
    return float(per.sum() / len(x) + 0.5 * weight_decay * ((w1 * w1).sum() + (w2 * w2).sum()))


def loss_gradients(params: list[np.ndarray], x: np.ndarray, y: np.ndarray,
                   weight_decay: float = 0.0) -> list[np.ndarray]:
    """Hand-derived gradients of :func:`bce_loss` for (w1, b1, w2, b2); checked against finite
    differences in the tests, since a wrong sign here would still "train" and silently hurt quality."""
    w1, b1, w2, b2 = params
    h_pre = x @ w1 + b1
    h = np.maximum(h_pre, 0)
    z = h @ w2 + b2
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    g_z = (p - y) / len(x)
    g_w2 = h.T @ g_z + weight_decay * w2
    g_b2 = g_z.sum(0)
    g_h = (g_z @ w2.T) * (h_pre > 0)
    g_w1 = x.T @ g_h + weight_decay * w1
    g_b1 = g_h.sum(0)
    return [g_w1, g_b1, g_w2, g_b2]


def _adam_fit(sample, n_in: int, n_labels: int, prior: np.ndarray, *, hidden: int, steps: int, lr: float,
              weight_decay: float, rng: np.random.Generator, on_step: Callable[[int], None] | None = None):
    """Minimise :func:`bce_loss` over ``sample(step) -> (x, y)`` batches with Adam and cosine decay."""
    params = init_params(n_in, n_labels, prior, hidden, rng)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        x, y = sample(step)
        grads = loss_gradients(params, x, y, weight_decay)
        cur_lr = lr * 0.5 * (1 + np.cos(np.pi * step / steps))  # cosine decay
        c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
        for i, g in enumerate(grads):
            m[i] *= beta1
            m[i] += (1 - beta1) * g
            v[i] *= beta2
            v[i] += (1 - beta2) * g * g
            params[i] -= (cur_lr / c1) * m[i] / (np.sqrt(v[i] / c2) + eps)
        if on_step:
            on_step(step)
    return params


def train_label_head(
    vectors_u8: np.ndarray,
    row_labels: np.ndarray | list[list[int]],
    *,
    n_labels: int = N_LABELS,
    hidden: int = 256,
    epochs: int = 3,
    batch: int = 1024,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    max_rows: int = MAX_TRAIN_ROWS,
    on_epoch: Callable[[int, int], None] | None = None,
) -> LabelHead:
    """Train on single seconds, each labelled with its clip's labels (dense 0/1 matrix or label lists)."""
    rng = np.random.default_rng(seed)
    n = len(vectors_u8)
    take = np.sort(rng.choice(n, size=max_rows, replace=False)) if n > max_rows else np.arange(n)
    x_all = _features(vectors_u8[take])
    if isinstance(row_labels, np.ndarray):
        y_all = row_labels[take]
    else:
        y_all = np.zeros((len(take), n_labels), dtype=np.uint8)
        for j, r in enumerate(take.tolist()):
            y_all[j, row_labels[r]] = 1
    mean, scale = _standardiser(x_all)
    x_all = (x_all - mean) / scale
    prior = y_all.mean(0, dtype=np.float64).astype(np.float32)
    per_epoch = int(np.ceil(len(x_all) / batch))
    orders: dict[int, np.ndarray] = {}

    def sample(step: int):
        e, b = divmod(step - 1, per_epoch)
        if e not in orders:
            orders.clear()
            orders[e] = rng.permutation(len(x_all))
        idx = orders[e][b * batch:(b + 1) * batch]
        return x_all[idx], y_all[idx].astype(np.float32)

    def on_step(step: int) -> None:
        if on_epoch and step % per_epoch == 0:
            on_epoch(step // per_epoch, epochs)

    w1, b1, w2, b2 = _adam_fit(sample, x_all.shape[1], n_labels, prior, hidden=hidden, steps=epochs * per_epoch,
                               lr=lr, weight_decay=weight_decay, rng=rng, on_step=on_step)
    return LabelHead(w1, b1, w2, b2, mean.astype(np.float32), scale.astype(np.float32), prior)


def train_window_head(
    vectors_u8: np.ndarray,
    seg_first: np.ndarray,
    seg_len: np.ndarray,
    seg_labels: np.ndarray,
    *,
    hidden: int = 256,
    samples: int = 400_000,
    batch: int = 1024,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> LabelHead:
    """Train on the *mean of random windows* (1–10 s) of each clip, labelled with the clip's labels.

    Why windows: queries are several seconds long and a window mean is a less noisy view of a
    clip than one second, so training on the distribution the head is asked about at query time
    (any length, one second included for the per-row view) fits it better for the same cost.
    ``seg_labels`` is a dense 0/1 [segments, labels] matrix.
    """
    rng = np.random.default_rng(seed)
    data = window_batches(vectors_u8, seg_first, seg_len, seg_labels, batch=batch, rng=rng)
    steps = int(np.ceil(samples / batch))

    def on_step(step: int) -> None:
        if on_progress and (step % 100 == 0 or step == steps):
            on_progress(step, steps)

    w1, b1, w2, b2 = _adam_fit(data.sample, data.n_in, data.n_labels, data.prior, hidden=hidden, steps=steps,
                               lr=lr, weight_decay=weight_decay, rng=rng, on_step=on_step)
    return LabelHead(w1, b1, w2, b2, data.mean, data.scale, data.prior)


@dataclass
class WindowBatches:
    """What :func:`train_window_head` fits: standardisation, label priors and a batch sampler
    (``sample(step) -> (x, y)``). Separate so another optimiser can be measured on the same batches
    (``bench/labelhead.py``)."""

    mean: np.ndarray
    scale: np.ndarray
    prior: np.ndarray
    n_in: int
    n_labels: int
    sample: Callable[[int], tuple[np.ndarray, np.ndarray]]


def window_batches(vectors_u8: np.ndarray, seg_first: np.ndarray, seg_len: np.ndarray, seg_labels: np.ndarray,
                   *, batch: int, rng: np.random.Generator) -> WindowBatches:
    """Random windows of 1–10 s of random clips, each as the mean of its standardised seconds
    (a prefix sum makes any window mean two lookups), labelled with the clip's labels."""
    x = _features(vectors_u8)
    mean, scale = _standardiser(x)
    x = (x - mean) / scale
    cs = np.zeros((len(x) + 1, x.shape[1]), dtype=np.float64)
    np.cumsum(x, axis=0, out=cs[1:])
    del x
    n_seg = len(seg_len)
    prior = seg_labels.mean(0, dtype=np.float64).astype(np.float32)

    def sample(_step: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.integers(0, n_seg, batch)
        ln = seg_len[s]
        w = np.minimum(rng.integers(1, 11, batch), ln)
        st = seg_first[s] + (rng.random(batch) * (ln - w + 1)).astype(np.int64)
        xb = ((cs[st + w] - cs[st]) / w[:, None]).astype(np.float32)
        return xb, seg_labels[s].astype(np.float32)

    return WindowBatches(mean.astype(np.float32), scale.astype(np.float32), prior, cs.shape[1],
                         seg_labels.shape[1], sample)


def top_k_view(head: LabelHead, vectors_u8: np.ndarray, k: int = 8, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-K labels (uint16) and probabilities (uint8, ×255): 3K bytes a row instead of 2 KB."""
    n = len(vectors_u8)
    idx = np.zeros((n, k), dtype=np.uint16)
    prob = np.zeros((n, k), dtype=np.uint8)
    for lo in range(0, n, chunk):
        p = head.predict(vectors_u8[lo:lo + chunk])
        top = np.argpartition(-p, k - 1, axis=1)[:, :k]
        tp = np.take_along_axis(p, top, 1)
        order = np.argsort(-tp, axis=1)
        idx[lo:lo + chunk] = np.take_along_axis(top, order, 1)
        prob[lo:lo + chunk] = np.round(np.take_along_axis(tp, order, 1) * 255).astype(np.uint8)
    return idx, prob

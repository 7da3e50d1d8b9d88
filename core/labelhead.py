"""A small learned label head: per-second uint8 AudioSet vector → 527 label probabilities.

Why: AudioSet vectors of the same *kind* of sound are far apart in raw Euclidean space (the seed
projects' weakness), while a multi-label classifier trained on the index's own clip labels maps
a query into the label space where "sounds like" is measured. Search then ranks indexed segments
by how well their known labels fit the query's predicted labels (see core.search), and the
per-row probabilities are stored in the build for the YAMNet label bridge and ``--text``.

A plain NumPy MLP (one hidden ReLU layer, sigmoid outputs, binary cross-entropy, Adam) keeps the
head dependency-free and fast to train at build time; it is trained only on indexed clips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_LABELS = 527


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
        """One probability vector for a whole query: mean of the per-second logits, then sigmoid."""
        z = self.logits(q_u8).mean(axis=0)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2, mean=self.mean, scale=self.scale,
                 prior=self.prior)

    @classmethod
    def load(cls, path: Path) -> LabelHead:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in ("w1", "b1", "w2", "b2", "mean", "scale", "prior")})


def train_label_head(
    vectors_u8: np.ndarray,
    row_labels: list[list[int]] | np.ndarray,
    *,
    n_labels: int = N_LABELS,
    hidden: int = 512,
    epochs: int = 6,
    batch: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    max_rows: int = 600_000,
    on_epoch: Callable[[int, int], None] | None = None,
) -> LabelHead:
    """Train on rows (each labelled with its clip's labels). ``row_labels`` may be a dense 0/1 matrix."""
    rng = np.random.default_rng(seed)
    n = len(vectors_u8)
    take = np.sort(rng.choice(n, size=max_rows, replace=False)) if n > max_rows else np.arange(n)
    x_all = _features(vectors_u8[take])
    if isinstance(row_labels, np.ndarray):
        y_all = row_labels[take].astype(np.float32)
    else:
        y_all = np.zeros((len(take), n_labels), dtype=np.float32)
        for i, r in enumerate(take):
            y_all[i, row_labels[r]] = 1.0
    mean = x_all.mean(0)
    scale = x_all.std(0) + 1e-3
    x_all = (x_all - mean) / scale
    prior = y_all.mean(0)

    w1 = (rng.standard_normal((x_all.shape[1], hidden)) * np.sqrt(2.0 / x_all.shape[1])).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = (rng.standard_normal((hidden, n_labels)) * np.sqrt(1.0 / hidden)).astype(np.float32)
    b2 = np.log(np.clip(prior, 1e-4, 0.5) / (1 - np.clip(prior, 1e-4, 0.5))).astype(np.float32)
    params = [w1, b1, w2, b2]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    steps_total = epochs * int(np.ceil(len(x_all) / batch))
    for epoch in range(epochs):
        order = rng.permutation(len(x_all))
        for lo in range(0, len(order), batch):
            idx = order[lo:lo + batch]
            x, y = x_all[idx], y_all[idx]
            h_pre = x @ w1 + b1
            h = np.maximum(h_pre, 0)
            z = h @ w2 + b2
            p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
            g_z = (p - y) / len(idx)
            g_w2 = h.T @ g_z + weight_decay * w2
            g_b2 = g_z.sum(0)
            g_h = (g_z @ w2.T) * (h_pre > 0)
            g_w1 = x.T @ g_h + weight_decay * w1
            g_b1 = g_h.sum(0)
            step += 1
            cur_lr = lr * 0.5 * (1 + np.cos(np.pi * step / steps_total))  # cosine decay
            for i, g in enumerate((g_w1, g_b1, g_w2, g_b2)):
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                mh = m[i] / (1 - beta1 ** step)
                vh = v[i] / (1 - beta2 ** step)
                params[i] -= (cur_lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
        if on_epoch:
            on_epoch(epoch + 1, epochs)
    return LabelHead(w1, b1, w2, b2, mean.astype(np.float32), scale.astype(np.float32), prior.astype(np.float32))


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


# Module-level convenience for other stages (the YAMNet bridge): the head of the current build.
def predict(q_u8: np.ndarray, head: LabelHead) -> np.ndarray:
    return head.predict(q_u8)

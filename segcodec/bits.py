"""Numba kernels for the latent bits: threshold, checkerboard order and context indices.

format_spec.md §5.1-§5.2.  Latents are handled as (K, D, H, W) uint8 arrays; a 2D grid is
(K, 1, H, W), whose first spatial axis then has no neighbours.
"""
from __future__ import annotations

import hashlib

import numpy as np
from numba import njit


def n_contexts(latent_channels: int, ndim: int) -> int:
    """Table size (§5.3)."""
    return latent_channels * 2 * 4 * (2 * ndim + 1)


@njit(cache=True)
def _phase_contexts(z, k, phase, ndim, pos, ctx):
    """Fill pos/ctx for channel k, phase ``phase`` (§5.1 order, §5.2 context); return count."""
    _, nd, nh, nw = z.shape
    span = 2 * ndim + 1
    base = (2 * k + phase) * 4
    src = k if phase == 1 else k - 1  # channel whose neighbours give n
    m = 0
    for d in range(nd):
        for h in range(nh):
            for w in range(nw):
                if (d + h + w) % 2 != phase:
                    continue
                a = 0
                if k >= 1:
                    a += z[k - 1, d, h, w]
                if k >= 2:
                    a += 2 * z[k - 2, d, h, w]
                n = 0
                if src >= 0:
                    if h > 0:
                        n += z[src, d, h - 1, w]
                    if h + 1 < nh:
                        n += z[src, d, h + 1, w]
                    if w > 0:
                        n += z[src, d, h, w - 1]
                    if w + 1 < nw:
                        n += z[src, d, h, w + 1]
                    if ndim == 3:
                        if d > 0:
                            n += z[src, d - 1, h, w]
                        if d + 1 < nd:
                            n += z[src, d + 1, h, w]
                pos[m] = (d * nh + h) * nw + w
                ctx[m] = (base + a) * span + n
                m += 1
    return m


def phase_contexts(z: np.ndarray, k: int, phase: int, ndim: int):
    """(flat positions within channel k, context indices) of one phase, in coding order."""
    size = z[0].size
    pos = np.empty((size + 1) // 2, dtype=np.int64)
    ctx = np.empty((size + 1) // 2, dtype=np.int32)
    m = _phase_contexts(z, k, phase, ndim, pos, ctx)
    return pos[:m], ctx[:m]


def threshold(logits: np.ndarray) -> np.ndarray:
    """C's latent logits -> binary latents (sigmoid(x) > 0.5 is x > 0), as uint8."""
    return (np.asarray(logits) > 0).astype(np.uint8)


def as_grid4(z: np.ndarray) -> np.ndarray:
    """(K, H, W) or (K, D, H, W) -> a contiguous (K, D, H, W) uint8 view for the kernels."""
    z = np.ascontiguousarray(z, dtype=np.uint8)
    return z[:, None] if z.ndim == 3 else z


def coding_order(z: np.ndarray, ndim: int):
    """All bits of z in §5.1 order with their §5.2 contexts: (symbols, contexts)."""
    z4 = as_grid4(z)
    symbols, contexts = [], []
    for k in range(z4.shape[0]):
        for phase in (0, 1):
            pos, ctx = phase_contexts(z4, k, phase, ndim)
            symbols.append(z4[k].reshape(-1)[pos])
            contexts.append(ctx)
    return np.concatenate(symbols), np.concatenate(contexts)


def latent_digest(z: np.ndarray) -> str:
    """SHA-256 of the packed latent bits: a short fingerprint for golden tests and `info`."""
    return hashlib.sha256(np.packbits(np.ascontiguousarray(z, dtype=np.uint8))).hexdigest()

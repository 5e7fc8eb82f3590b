"""The latent bits: threshold, checkerboard order and context indices.

format_spec.md §5.1-§5.2.  Latents are handled as (K, D, H, W) uint8 arrays; a 2D grid is
(K, 1, H, W), whose first spatial axis then has no neighbours.  Whole-array integer numpy: the
clinic's encoder imports no JIT compiler (numba's import alone outlasted the coding).
"""
from __future__ import annotations

import hashlib

import numpy as np


def n_contexts(latent_channels: int, ndim: int) -> int:
    """Table size (§5.3)."""
    return latent_channels * 2 * 4 * (2 * ndim + 1)


def _neighbour_sums(plane: np.ndarray, ndim: int) -> np.ndarray:
    """Each position's count of set neighbours within ``plane`` (D, H, W): along H and W, and
    along D in 3D; outside the grid counts as 0."""
    p = np.pad(plane.astype(np.int32), 1)
    n = p[1:-1, :-2, 1:-1] + p[1:-1, 2:, 1:-1] + p[1:-1, 1:-1, :-2] + p[1:-1, 1:-1, 2:]
    if ndim == 3:
        n += p[:-2, 1:-1, 1:-1] + p[2:, 1:-1, 1:-1]
    return n


def phase_contexts(z: np.ndarray, k: int, phase: int, ndim: int):
    """(flat positions within channel k, context indices) of one phase, in coding order.

    ``z`` (K, D, H, W) needs to hold only what comes before channel k's phase in §5.1 order:
    a phase-1 position's neighbours in its own channel are all of phase 0."""
    _, nd, nh, nw = z.shape
    d, h, w = np.ogrid[:nd, :nh, :nw]
    pos = np.flatnonzero(((d + h + w) % 2 == phase).reshape(-1))  # raster order
    a = np.zeros(nd * nh * nw, dtype=np.int32)
    if k >= 1:
        a += z[k - 1].reshape(-1)
    if k >= 2:
        a += 2 * z[k - 2].reshape(-1).astype(np.int32)
    src = k if phase == 1 else k - 1  # the channel whose neighbours give n
    span = 2 * ndim + 1
    ctx = ((2 * k + phase) * 4 + a[pos]) * span
    if src >= 0:
        ctx += _neighbour_sums(z[src], ndim).reshape(-1)[pos]
    return pos.astype(np.int64), ctx.astype(np.int32)


def threshold(logits: np.ndarray) -> np.ndarray:
    """C's latent logits -> binary latents (sigmoid(x) > 0.5 is x > 0), as uint8."""
    return (np.asarray(logits) > 0).astype(np.uint8)


def as_grid4(z: np.ndarray) -> np.ndarray:
    """(K, H, W) or (K, D, H, W) -> a contiguous (K, D, H, W) uint8 view for the kernels."""
    z = np.ascontiguousarray(z, dtype=np.uint8)
    return z[:, None] if z.ndim == 3 else z


def coding_order(z: np.ndarray, ndim: int):
    """All bits of z in §5.1 order with their §5.2 contexts: (symbols, contexts).

    What ``phase_contexts`` gives phase by phase, for every channel at once: the encoder
    knows all of z (the decoder, which learns it phase by phase, calls ``phase_contexts``)."""
    z4 = as_grid4(z)
    nk, nd, nh, nw = z4.shape
    flat = z4.reshape(nk, -1)
    d, h, w = np.ogrid[:nd, :nh, :nw]
    parity = ((d + h + w) % 2).reshape(-1)
    a = np.zeros(flat.shape, dtype=np.int32)
    a[1:] += flat[:-1]
    a[2:] += 2 * flat[:-2].astype(np.int32)
    sums = np.stack([_neighbour_sums(plane, ndim).reshape(-1) for plane in z4])
    # Phase 0 takes its neighbour count from the channel before (none for the first).
    before = np.concatenate([np.zeros_like(sums[:1]), sums[:-1]])
    span = 2 * ndim + 1
    k = np.arange(nk, dtype=np.int32)[:, None]
    symbols, contexts = [], []
    for phase, n in ((0, before), (1, sums)):
        pos = np.flatnonzero(parity == phase)
        symbols.append(flat[:, pos])
        contexts.append(((2 * k + phase) * 4 + a[:, pos]) * span + n[:, pos])
    return (np.concatenate(symbols, axis=1).reshape(-1),
            np.concatenate(contexts, axis=1).reshape(-1).astype(np.int32))


def latent_digest(z: np.ndarray) -> str:
    """SHA-256 of the packed latent bits: a short fingerprint for golden tests and `info`."""
    return hashlib.sha256(np.packbits(np.ascontiguousarray(z, dtype=np.uint8))).hexdigest()

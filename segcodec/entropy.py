"""Range coding of binary latents under integer context tables (format_spec.md §4-§5).

Only integers decide the probabilities: a context index (bits.py) selects a 16-bit entry of the
model's table, and the float64 pair handed to constriction is exact.  Decoding makes one coder
call per channel and phase, never one per bit.
"""
from __future__ import annotations

import constriction
import numpy as np

from . import bits, wire
from .errors import SgcFormatError

ONE = 1 << 16  # fixed-point scale of the tables (§5.3)


def _probabilities(table: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    t = table[ctx].astype(np.float64)
    return np.stack([(ONE - t) / ONE, t / ONE], axis=1)


def check_table(table: np.ndarray, latent_channels: int, ndim: int) -> np.ndarray:
    table = np.asarray(table)
    if table.shape != (bits.n_contexts(latent_channels, ndim),):
        raise ValueError(f"entropy table has shape {table.shape}, expected "
                         f"({bits.n_contexts(latent_channels, ndim)},)")
    if table.min() < 1 or table.max() >= ONE:
        raise ValueError("entropy table entries must lie in 1..65535")
    return table.astype(np.int64)


def fit_table(latents, ndim: int) -> np.ndarray:
    """Integer table from example latents: Krichevsky-Trofimov estimate per context."""
    latents = list(latents)
    n_ctx = bits.n_contexts(latents[0].shape[0], ndim)
    ones = np.zeros(n_ctx, dtype=np.int64)
    total = np.zeros(n_ctx, dtype=np.int64)
    for z in latents:
        symbols, ctx = bits.coding_order(z, ndim)
        total += np.bincount(ctx, minlength=n_ctx)
        ones += np.bincount(ctx, weights=symbols, minlength=n_ctx).astype(np.int64)
    p = (ones + 0.5) / (total + 1.0)
    return np.clip(np.round(p * ONE), 1, ONE - 1).astype(np.int32)


def ideal_bits(z: np.ndarray, table: np.ndarray, ndim: int) -> float:
    """The code length the table assigns to z, in bits: what an ideal coder would spend."""
    symbols, ctx = bits.coding_order(z, ndim)
    p_one = table[ctx] / ONE
    return float(-np.log2(np.where(symbols == 1, p_one, 1.0 - p_one)).sum())


def range_code(symbols: np.ndarray, ctx: np.ndarray, table: np.ndarray) -> bytes:
    encoder = constriction.stream.queue.RangeEncoder()
    if symbols.size:
        encoder.encode(symbols.astype(np.int32), wire.coder_model(),
                       _probabilities(table, ctx))
    return wire.coded_bytes(encoder)


def encode(z: np.ndarray, table: np.ndarray, ndim: int) -> bytes:
    """Binary latents (K, *grid) -> payload bytes (§4)."""
    symbols, ctx = bits.coding_order(z, ndim)
    data = range_code(symbols, ctx, table)
    # §4: drop trailing bytes (or round the last kept byte up) while the stream still decodes
    # to the same bits; the decoder pads with zeros.  Checked by decoding, so always safe.
    for keep in range(max(0, len(data) - 4), len(data)):
        candidates = [data[:keep]]
        if keep and data[keep - 1] < 255:
            candidates.append(data[:keep - 1] + bytes([data[keep - 1] + 1]))
        for cand in candidates:
            try:
                if np.array_equal(decode(cand, table, z.shape, ndim), z):
                    return cand
            except SgcFormatError:
                pass
    return data


def decode(payload: bytes, table: np.ndarray, latent_shape, ndim: int) -> np.ndarray:
    """Payload bytes -> binary latents of ``latent_shape`` (uint8)."""
    decoder = wire.decoder_for(payload)
    z = np.zeros(latent_shape, dtype=np.uint8)
    z4 = bits.as_grid4(z)
    model = wire.coder_model()
    try:
        for k in range(z4.shape[0]):
            plane = z4[k].reshape(-1)
            for phase in (0, 1):
                pos, ctx = bits.phase_contexts(z4, k, phase, ndim)
                if pos.size:
                    plane[pos] = decoder.decode(model, _probabilities(table, ctx))
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise SgcFormatError(f"corrupted .sgc: payload does not decode ({exc})") from None
    return z4.reshape(latent_shape)

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


def _encoder(symbols: np.ndarray, ctx: np.ndarray, table: np.ndarray):
    encoder = constriction.stream.queue.RangeEncoder()
    if symbols.size:
        encoder.encode(symbols.astype(np.int32), wire.coder_model(),
                       _probabilities(table, ctx))
    return encoder


def range_code(symbols: np.ndarray, ctx: np.ndarray, table: np.ndarray) -> bytes:
    """The range coder's sealed stream (§5.4) for symbols in coding order, untrimmed."""
    return wire.coded_bytes(_encoder(symbols, ctx, table))


def shortest_payload(sealed: bytes, words: int, lower: int, width: int) -> bytes:
    """§4's trim, computed: the shortest prefix of the ``sealed`` stream, or that prefix with
    its last byte rounded up (without a carry), that still decodes to the same symbols.

    A zero-padded stream decodes to the same symbols exactly when its value lies in the coder's
    final interval: ``[lower, lower + width)`` in the 64 bits after its first ``words``
    settled words (``RangeEncoder.pos()`` before sealing).  Only the last four bytes are
    candidates, shortest first, truncation before rounding up: the choice earlier versions
    made by trial decodes, so the bytes are the same."""
    total = 32 * words + 64  # bits up to the end of the final interval's window
    if 8 * len(sealed) > total:  # not a stream these numbers describe: keep it whole
        return sealed
    value = int.from_bytes(sealed, "big") << (total - 8 * len(sealed))
    settled = (value - lower) >> 64  # the settled words, with any carry sealing added
    low = (settled << 64) + lower
    if not low <= value < low + width:  # the sealed stream always is: else keep it whole
        return sealed
    for keep in range(max(0, len(sealed) - 4), len(sealed)):
        unit = 1 << (total - 8 * keep)
        cut = value >> (total - 8 * keep) << (total - 8 * keep)
        if low <= cut < low + width:
            return sealed[:keep]
        if keep and sealed[keep - 1] < 255 and low <= cut + unit < low + width:
            return sealed[:keep - 1] + bytes([sealed[keep - 1] + 1])
    return sealed


def encode(z: np.ndarray, table: np.ndarray, ndim: int) -> bytes:
    """Binary latents (K, *grid) -> payload bytes (§4)."""
    encoder = _encoder(*bits.coding_order(z, ndim), table)
    words, (lower, width) = encoder.pos()
    return shortest_payload(wire.coded_bytes(encoder), words, lower, width)


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
        raise SgcFormatError(f"corrupted .sgc: payload does not decode ({exc})") from exc
    return z4.reshape(latent_shape)

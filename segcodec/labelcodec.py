"""Lossless coding of uint8 label maps: what the server sends back (format_spec.md §7).

A causal-context range coder on the label values.  Pixels are coded in wavefronts (§7.3):
every pixel of a wavefront has its causal neighbours in earlier wavefronts, so a wavefront is
one coder call, never one call per pixel.  A pixel is coded as its rank among its neighbours'
values (§7.4) under adaptive integer counts (§7.5), so the probabilities are integers over
2^16 and the stream is identical on any machine.  Used by the service and by the benchmark's
"send the labels" baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np
from numba import njit

from . import wire
from .container import SOURCE_KINDS, check_image_shape
from .errors import InputError, SgcFormatError

MEDIA_TYPE = "application/x-segcodec-labels"  # the service's default answer
MAGIC = b"SL"  # §7.1
VERSION = 1
MIN_BYTES = 12  # §7.1: fixed fields, two one-byte varints, empty payload, CRC
ONE = 1 << 16  # probabilities are integers over 2^16 (§7.5)
STEP, LIMIT = 32, 1 << 13  # count increment per symbol, and the total that halves a context
# §7.5: every count stays >= 1 and a row's total <= LIMIT, so each symbol but the likeliest
# gets q >= 1 + (ONE - A) // LIMIT = 8 (A <= 256) and each position costs at least
# -log2(1 - 8 (A - 1) / ONE) > (A - 1) / 8192 bits: a payload of N bytes holds at most
# (8 N + SLACK_BITS) * 8192 / (A - 1) positions (SLACK_BITS: the coder's last words, trimmed).
SLACK_BITS = 96
ESCAPE = 8  # ranks >= ESCAPE share one symbol when there are more than 9 classes (§7.4)
BUCKETS = 4  # the first neighbour's value, capped at 3, splits contexts (§7.4)
# §7.3-§7.4: wavefront weights over (i, j, k) and the causal neighbours, first one first.
# A 2D map is (1, H, W).
WEIGHTS = {2: (0, 2, 1), 3: (2, 1, 1)}
NEIGHBOURS = {
    2: ((0, 0, -1), (0, -1, 0), (0, -1, -1), (0, -1, 1)),  # W N NW NE
    3: ((-1, 0, 0), (0, 0, -1), (0, -1, 0), (-1, 1, 0), (-1, 0, 1), (-1, -1, 0), (-1, 0, -1)),
}


@dataclass
class LabelMap:
    """A decoded label stream: the labels and what travels with them."""
    labels: np.ndarray  # uint8, (H, W) or (I, J, K)
    classes: int
    affine: np.ndarray | None = None  # 4x4 float64, as in the .sgc it came from
    source: str = "array"


@njit(cache=True)
def _rank(flat, p, deltas, v):
    """v -> its index among the distinct neighbour values, else after them in value order."""
    d = 0
    less = 0
    for t in range(deltas.size):
        c = flat[p + deltas[t]]
        new = True
        for s in range(t):
            if flat[p + deltas[s]] == c:
                new = False
                break
        if new:
            if c == v:
                return d
            if c < v:
                less += 1
            d += 1
    return d + v - less


@njit(cache=True)
def _unrank(flat, p, deltas, r, seen):
    d = 0
    for t in range(deltas.size):
        c = flat[p + deltas[t]]
        new = True
        for s in range(d):
            if seen[s] == c:
                new = False
                break
        if new:
            if d == r:
                return c
            seen[d] = c
            d += 1
    seen[:d].sort()
    v = r - d
    for s in range(d):  # the (r - d)-th value that is no neighbour's
        if seen[s] <= v:
            v += 1
    return v


@njit(cache=True)
def _wavefront(flat, dims, wa, wb, front, deltas, pos, ctx, sym, coding):
    """Fill pos/ctx (and sym when coding) for wavefront ``front`` (§7.3-§7.4); return count."""
    ni, nj, nk = dims
    sj = nk + 2
    si = (nj + 2) * sj
    n = 0
    for i in range(ni):
        s = front - wa * i
        if s < 0:
            break
        for j in range(max(0, -((nk - 1 - s) // wb)), min(nj - 1, s // wb) + 1):
            p = (i + 1) * si + (j + 1) * sj + s - wb * j + 1
            first = flat[p + deltas[0]]
            pattern = 0
            for t in range(1, deltas.size):
                if flat[p + deltas[t]] == first:
                    pattern |= 1 << (t - 1)
            pos[n] = p
            ctx[n] = pattern * 4 + min(first, 3)
            if coding:
                sym[n] = _rank(flat, p, deltas, flat[p])
            n += 1
    return n


@njit(cache=True)
def _place(flat, deltas, pos, ranks):
    seen = np.empty(deltas.size, dtype=flat.dtype)
    for t in range(pos.size):
        flat[pos[t]] = _unrank(flat, pos[t], deltas, ranks[t], seen)


@njit(cache=True)
def _probabilities(counts, ctx):
    """§7.5: each context's counts -> integers over 2^16 -> exact float64 rows, per pixel."""
    contexts, a = counts.shape
    table = np.empty((contexts, a))
    for c in range(contexts):
        total = counts[c].sum()
        used, best = 0, 0
        for s in range(a):
            q = 1 + counts[c, s] * (ONE - a) // total
            table[c, s] = q
            used += q
            if counts[c, s] > counts[c, best]:
                best = s
        table[c, best] += ONE - used
    out = np.empty((ctx.size, a))
    for t in range(ctx.size):
        for s in range(a):
            out[t, s] = table[ctx[t], s] / ONE  # an integer over a power of two: exact
    return out


@njit(cache=True)
def _update(counts, ctx, sym):
    """§7.5: count what a wavefront coded, then halve every context whose total is too big."""
    for t in range(ctx.size):
        counts[ctx[t], sym[t]] += STEP
    for c in range(counts.shape[0]):
        while counts[c].sum() > LIMIT:
            for s in range(counts.shape[1]):
                counts[c, s] = (counts[c, s] + 1) >> 1


def _setup(shape, classes):
    ndim = len(shape)
    dims = (1, *shape) if ndim == 2 else tuple(shape)
    padded = np.zeros(tuple(s + 2 for s in dims), dtype=np.uint8)  # outside counts as 0
    sj = dims[2] + 2
    si = (dims[1] + 2) * sj
    deltas = np.array([a * si + b * sj + c for a, b, c in NEIGHBOURS[ndim]], dtype=np.int64)
    wa, wb, _ = WEIGHTS[ndim]
    fronts = wa * (dims[0] - 1) + wb * (dims[1] - 1) + dims[2]
    most = min(dims[1], dims[2]) * dims[0]  # no wavefront holds more than one line per (i, j)
    alphabet = min(classes, ESCAPE + 1)
    return (padded, np.array(dims, dtype=np.int64), wa, wb, fronts, deltas, most,
            np.ones((BUCKETS << (len(deltas) - 1), alphabet), dtype=np.int64), alphabet)


def encode(labels, classes: int | None = None, *, affine=None, source: str = "array") -> bytes:
    """A 2D or 3D integer label map (values < ``classes``, default max + 1) -> label stream."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise InputError(f"labels must be integers, not {labels.dtype}")
    check_image_shape(labels.shape, 1, InputError)
    lo, top = int(labels.min()), int(labels.max())
    if lo < 0 or top > 255:
        raise InputError(f"labels must lie in 0..255, got {lo}..{top}")
    classes = top + 1 if classes is None else int(classes)
    if not 1 <= classes <= 256:
        raise InputError(f"classes must be 1..256, not {classes}")
    if top >= classes:
        raise InputError(f"labels go up to {top} but {classes} classes allow 0..{classes - 1}")
    if source not in SOURCE_KINDS:
        raise InputError(f"source must be one of {', '.join(SOURCE_KINDS)}")
    if affine is not None and (np.shape(affine) != (4, 4) or not np.isfinite(affine).all()):
        raise InputError("affine must be a finite 4x4 matrix")
    padded, dims, wa, wb, fronts, deltas, most, counts, alphabet = _setup(labels.shape, classes)
    padded[1:-1, 1:-1, 1:-1] = labels.reshape(tuple(dims))
    flat = padded.reshape(-1)
    pos, ctx, sym = (np.empty(most, dtype=np.int64) for _ in range(3))
    escapes = np.ones((1, max(1, classes - ESCAPE)), dtype=np.int64)
    encoder = constriction.stream.queue.RangeEncoder()
    model = wire.coder_model()
    for front in range(fronts if classes > 1 else 0):
        n = _wavefront(flat, dims, wa, wb, front, deltas, pos, ctx, sym, True)
        c, s = ctx[:n], sym[:n]
        main = np.minimum(s, ESCAPE) if alphabet < classes else s
        encoder.encode(main.astype(np.int32), model, _probabilities(counts, c))
        _update(counts, c, main)
        if alphabet < classes:
            esc = s[s >= ESCAPE] - ESCAPE
            if esc.size:
                zeros = np.zeros_like(esc)
                encoder.encode(esc.astype(np.int32), model, _probabilities(escapes, zeros))
                _update(escapes, zeros, esc)
    payload = wire.coded_bytes(encoder)
    payload = payload[:len(payload) - min(3, len(payload) - len(payload.rstrip(b"\0")))]
    try:
        flags, geometry = wire.geometry(affine)
    except ValueError as exc:  # finite in float64, not in the stream's float32
        raise InputError(str(exc)) from exc
    out = bytearray(MAGIC) + bytes([VERSION, flags | SOURCE_KINDS.index(source) << 2,
                                    labels.ndim])
    for s in labels.shape:
        out += wire.varint(s)
    out += bytes([classes - 1]) + geometry + payload
    return wire.with_crc(out)


def _bad(message: str) -> SgcFormatError:
    return SgcFormatError(f"invalid label stream: {message}")


def _parse(data: bytes):
    """Check a label stream's CRC and header -> (shape, classes, affine, source, payload)."""
    data = bytes(data)
    if len(data) < MIN_BYTES:
        raise _bad(f"{len(data)} bytes, a valid stream has at least {MIN_BYTES}")
    if data[:2] != MAGIC:
        raise _bad("magic bytes are not 'SL'")
    if not wire.crc_matches(data):
        raise _bad("CRC-32 mismatch (truncated or damaged)")
    version, flags, ndim = data[2:5]
    if version != VERSION:
        raise _bad(f"version {version}; this reader knows {VERSION}")
    if flags & 0xE2 or (flags & wire.AXIS_ALIGNED and not flags & wire.GEOMETRY):
        raise _bad(f"reserved flag bits set (flags = {flags:#04x})")
    if ndim not in (2, 3):
        raise _bad(f"ndim = {ndim}, expected 2 or 3")
    r = wire.Reader(data, len(data) - 4, "label stream", pos=5)
    shape = tuple(r.varint(f"shape[{i}]", 0, 1 << 21) for i in range(ndim))
    check_image_shape(shape, 1, _bad)
    classes = r.take(1, "classes")[0] + 1
    affine = r.geometry(flags)
    return shape, classes, affine, SOURCE_KINDS[(flags >> 2) & 3], data[r.pos:r.end]


def decode(data: bytes, max_voxels: int = 1 << 24) -> LabelMap:
    """Label stream -> LabelMap, bit-exact; SgcFormatError names what is wrong.

    Decoding costs time in proportion to the voxels a stream declares, and a 16-byte stream
    may declare 406³: more than ``max_voxels`` (256³ by default), or more than its payload
    can hold (§7.5), is refused before any work.
    """
    shape, classes, affine, source, payload = _parse(data)
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > max_voxels:
        raise _bad(f"declares {voxels} voxels, more than the {max_voxels} allowed here")
    if classes > 1 and not payload:  # every real stream of more than one class has a byte
        raise _bad("payload is empty or longer than its labels")
    symbols = min(classes, ESCAPE + 1)  # the main alphabet (§7.4)
    if classes > 1 and voxels * (symbols - 1) > (8 * len(payload) + SLACK_BITS) * 8192:
        raise _bad(f"a payload of {len(payload)} bytes cannot hold {voxels} labels")
    padded, dims, wa, wb, fronts, deltas, most, counts, alphabet = _setup(shape, classes)
    flat = padded.reshape(-1)
    decoder = wire.decoder_for(payload)
    model = wire.coder_model()
    pos, ctx = np.empty(most, dtype=np.int64), np.empty(most, dtype=np.int64)
    escapes = np.ones((1, max(1, classes - ESCAPE)), dtype=np.int64)
    try:
        for front in range(fronts if classes > 1 else 0):
            n = _wavefront(flat, dims, wa, wb, front, deltas, pos, ctx, ctx, False)
            c = ctx[:n]
            sym = decoder.decode(model, _probabilities(counts, c)).astype(np.int64)
            _update(counts, c, sym)
            if alphabet < classes:
                hit = np.flatnonzero(sym == ESCAPE)
                if hit.size:
                    zeros = np.zeros(hit.size, dtype=np.int64)
                    esc = decoder.decode(model, _probabilities(escapes, zeros)).astype(np.int64)
                    _update(escapes, zeros, esc)
                    sym[hit] += esc
            _place(flat, deltas, pos[:n], sym)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise _bad(f"payload does not decode ({exc})") from exc
    if classes > 1 and not decoder.maybe_exhausted():  # no more than its symbols need
        raise _bad("payload is empty or longer than its labels")
    labels = np.ascontiguousarray(padded[1:-1, 1:-1, 1:-1]).reshape(shape)
    return LabelMap(labels, classes, affine, source)

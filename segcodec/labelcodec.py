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

from . import labelkernels, wire
from .container import SOURCE_KINDS, check_image_shape
from .errors import InputError, SgcFormatError

MEDIA_TYPE = "application/x-segcodec-labels"  # the service's default answer
MAGIC = b"SL"  # §7.1
VERSION = 1
MIN_BYTES = 12  # §7.1: fixed fields, two one-byte varints, empty payload, CRC
# §7.5 (ONE and LIMIT: labelkernels): every count stays >= 1 and a row's total <= LIMIT,
# so each symbol but the likeliest gets q >= 1 + (ONE - A) // LIMIT = 8 (A <= 256) and each
# position costs at least -log2(1 - 8 (A - 1) / ONE) > (A - 1) / 8192 bits: a payload of N
# bytes holds at most (8 N + SLACK_BITS) * 8192 / (A - 1) positions (SLACK_BITS: the coder's
# last words, trimmed).
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


class _Grid:
    """The padded map of §7.3 (outside counts as 0), its wavefronts, and the coder's adaptive
    counts (§7.5)."""

    def __init__(self, shape, classes: int):
        ndim = len(shape)
        self.dims = ni, nj, nk = (1, *shape) if ndim == 2 else tuple(shape)
        self.padded = np.zeros((ni + 2, nj + 2, nk + 2), dtype=np.uint8)
        self.flat = self.padded.reshape(-1)
        self.sj = nk + 2
        self.si = (nj + 2) * self.sj
        self.deltas = np.array([a * self.si + b * self.sj + c
                                for a, b, c in NEIGHBOURS[ndim]])
        self.wa, self.wb, _ = WEIGHTS[ndim]
        self.fronts = self.wa * (ni - 1) + self.wb * (nj - 1) + nk if classes > 1 else 0
        self.alphabet = min(classes, ESCAPE + 1)
        self.counts = np.ones((BUCKETS << (len(self.deltas) - 1), self.alphabet), np.int64)
        self.escapes = np.ones((1, max(1, classes - ESCAPE)), dtype=np.int64)

    def wavefronts(self):
        """Each wavefront's pixels as flat positions in ``padded``: (i, j, k) with
        wa i + wb j + k = front, by i, then j (§7.3).  One at a time: memory in proportion
        to a wavefront, not to the map."""
        ni, nj, nk = self.dims
        wa, wb = self.wa, self.wb
        if ni == 1:  # 2D: one run of j per wavefront
            for front in range(self.fronts):
                j = np.arange(max(0, -((nk - 1 - front) // wb)), min(nj - 1, front // wb) + 1)
                yield j * (self.sj - wb) + (self.si + self.sj + front + 1)
            return
        for front in range(self.fronts):
            i = np.arange(min(ni - 1, front // wa) + 1)
            k0 = front - wa * i  # k where j = 0
            lo = np.maximum(0, -((nk - 1 - k0) // wb))  # the first j with k < nk
            n = np.maximum(np.minimum(nj - 1, k0 // wb) - lo + 1, 0)
            j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n - lo, n)
            yield (np.repeat((i + 1) * self.si + k0 + 1, n) + (j + 1) * self.sj - wb * j)


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
    grid = _Grid(labels.shape, classes)
    grid.padded[1:-1, 1:-1, 1:-1] = labels.reshape(grid.dims)
    alphabet, counts, escapes = grid.alphabet, grid.counts, grid.escapes
    encoder = constriction.stream.queue.RangeEncoder()
    model = wire.coder_model()
    k = labelkernels.fastest
    for pos in grid.wavefronts():
        c, s = k.contexts(grid.flat, pos, grid.deltas), k.ranks(grid.flat, pos, grid.deltas)
        main = np.minimum(s, ESCAPE) if alphabet < classes else s
        encoder.encode(main.astype(np.int32), model, k.probabilities(counts, c))
        k.update(counts, c, main)
        if alphabet < classes:
            esc = s[s >= ESCAPE] - ESCAPE
            if esc.size:
                zeros = np.zeros_like(esc)
                encoder.encode(esc.astype(np.int32), model, k.probabilities(escapes, zeros))
                k.update(escapes, zeros, esc)
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
    grid = _Grid(shape, classes)
    alphabet, counts, escapes = grid.alphabet, grid.counts, grid.escapes
    decoder = wire.decoder_for(payload)
    model = wire.coder_model()
    k = labelkernels.fastest
    try:
        for pos in grid.wavefronts():
            c = k.contexts(grid.flat, pos, grid.deltas)
            sym = decoder.decode(model, k.probabilities(counts, c)).astype(np.int64)
            k.update(counts, c, sym)
            if alphabet < classes:
                hit = np.flatnonzero(sym == ESCAPE)
                if hit.size:
                    zeros = np.zeros(hit.size, dtype=np.int64)
                    esc = decoder.decode(model, k.probabilities(escapes, zeros)).astype(np.int64)
                    k.update(escapes, zeros, esc)
                    sym[hit] += esc
            k.place(grid.flat, pos, grid.deltas, sym)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise _bad(f"payload does not decode ({exc})") from exc
    if classes > 1 and not decoder.maybe_exhausted():  # no more than its symbols need
        raise _bad("payload is empty or longer than its labels")
    labels = np.ascontiguousarray(grid.padded[1:-1, 1:-1, 1:-1]).reshape(shape)
    return LabelMap(labels, classes, affine, source)

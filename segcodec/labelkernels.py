"""The label coder's per-pixel work (format_spec.md §7.3-§7.5), twice: in numpy, which every
install has, and compiled by numba where it is installed (the ``server`` extra).

Both compute the same integers, so ``labelcodec`` writes and reads the same streams with
either (tests/test_labelcodec.py codes the same maps with both).  The compiled kernels are
several times faster (``python -m bench startup``): a wavefront is a few hundred pixels, so
numpy's cost per call dominates.  The numpy ones spare the clinic's install numba and
llvmlite (about 210 MB) and their import.

Each set has the same five functions, over ``flat`` (the padded map, row-major), ``pos`` (flat
positions of pixels, in coding order) and ``deltas`` (the causal neighbours' offsets, first
one first):

- ``contexts(flat, pos, deltas)``: each pixel's context (§7.4);
- ``ranks(flat, pos, deltas)``: each pixel's value as its rank among its neighbours' (§7.4);
- ``place(flat, pos, deltas, ranks)``: the inverse, written into ``flat``;
- ``probabilities(counts, ctx)``: each context's counts as integers over 2^16, per pixel
  (exact float64 rows, §7.5);
- ``update(counts, ctx, sym)``: count a wavefront's symbols, then halve every context whose
  total passed the limit (§7.5).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

ONE = 1 << 16  # probabilities are integers over 2^16 (§7.5)
STEP, LIMIT = 32, 1 << 13  # count increment per symbol, and the total that halves a context


def _np_contexts(flat, pos, deltas):
    near = flat[pos[:, None] + deltas]
    bits = 1 << np.arange(len(deltas) - 1)
    return (near[:, 1:] == near[:, :1]) @ bits * 4 + np.minimum(near[:, 0], 3)


def _np_distinct(near):
    """Which neighbours hold a value no earlier neighbour holds, and their order."""
    earlier = np.tri(near.shape[1], k=-1, dtype=bool)  # [t, s]: s comes before t
    new = ~((near[:, :, None] == near[:, None, :]) & earlier).any(2)
    return new, np.cumsum(new, 1) - 1


def _np_ranks(flat, pos, deltas):
    near = flat[pos[:, None] + deltas]
    values = flat[pos].astype(np.int64)
    ranks = np.zeros(len(pos), dtype=np.int64)
    other = np.flatnonzero(values != near[:, 0])  # rank 0: the first neighbour's value
    if other.size:
        near, values = near[other], values[other]
        new, order = _np_distinct(near)
        hit = new & (near == values[:, None])
        beyond = new.sum(1) + values - (new & (near < values[:, None])).sum(1)
        ranks[other] = np.where(hit.any(1), order[np.arange(len(near)), hit.argmax(1)],
                                beyond)
    return ranks


def _np_place(flat, pos, deltas, ranks):
    near = flat[pos[:, None] + deltas]
    flat[pos] = near[:, 0]  # rank 0: the first neighbour's value
    other = np.flatnonzero(ranks)
    if not other.size:
        return
    near, ranks = near[other], ranks[other]
    new, order = _np_distinct(near)
    is_rank = new & (order == ranks[:, None])
    v = ranks - new.sum(1)
    held = np.sort(np.where(new, near.astype(np.int64), 1 << 16), 1)
    for column in held.T:  # the (r - d)-th value that is no neighbour's
        v += column <= v
    flat[pos[other]] = np.where(is_rank.any(1), near[np.arange(len(near)), is_rank.argmax(1)],
                                v)


def _np_probabilities(counts, ctx):
    a = counts.shape[1]
    table = 1 + counts * (ONE - a) // counts.sum(1, keepdims=True)
    table[np.arange(len(counts)), counts.argmax(1)] += ONE - table.sum(1)  # the first likeliest
    return table[ctx] / ONE  # integers over a power of two: exact


def _np_update(counts, ctx, sym):
    counts += STEP * np.bincount(ctx * counts.shape[1] + sym,
                                 minlength=counts.size).reshape(counts.shape)
    while (big := counts.sum(1) > LIMIT).any():
        counts[big] = (counts[big] + 1) >> 1


KERNELS = {"numpy": SimpleNamespace(contexts=_np_contexts, ranks=_np_ranks, place=_np_place,
                                    probabilities=_np_probabilities, update=_np_update)}

try:
    from numba import njit
except ImportError:  # the clinic's install
    njit = None

if njit is not None:
    @njit(cache=True)
    def _nb_contexts(flat, pos, deltas):
        out = np.empty(pos.size, dtype=np.int64)
        for n in range(pos.size):
            p = pos[n]
            first = flat[p + deltas[0]]
            pattern = 0
            for t in range(1, deltas.size):
                if flat[p + deltas[t]] == first:
                    pattern |= 1 << (t - 1)
            out[n] = pattern * 4 + min(first, 3)
        return out

    @njit(cache=True)
    def _nb_rank(flat, p, deltas, v):
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
    def _nb_ranks(flat, pos, deltas):
        out = np.empty(pos.size, dtype=np.int64)
        for n in range(pos.size):
            out[n] = _nb_rank(flat, pos[n], deltas, flat[pos[n]])
        return out

    @njit(cache=True)
    def _nb_unrank(flat, p, deltas, r, seen):
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
    def _nb_place(flat, pos, deltas, ranks):
        seen = np.empty(deltas.size, dtype=flat.dtype)
        for t in range(pos.size):
            flat[pos[t]] = _nb_unrank(flat, pos[t], deltas, ranks[t], seen)

    @njit(cache=True)
    def _nb_probabilities(counts, ctx):
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
                out[t, s] = table[ctx[t], s] / ONE
        return out

    @njit(cache=True)
    def _nb_update(counts, ctx, sym):
        for t in range(ctx.size):
            counts[ctx[t], sym[t]] += STEP
        for c in range(counts.shape[0]):
            while counts[c].sum() > LIMIT:
                for s in range(counts.shape[1]):
                    counts[c, s] = (counts[c, s] + 1) >> 1

    KERNELS["numba"] = SimpleNamespace(
        contexts=_nb_contexts, ranks=_nb_ranks, place=_nb_place,
        probabilities=_nb_probabilities, update=_nb_update)

fastest = KERNELS.get("numba", KERNELS["numpy"])

"""The validation carve of a data set folder: about a tenth of its training cases, drawn a
whole group of look-alike cases at a time.

A data set folder lists cases, not patients: the frames of one colonoscopy video, or one
patient's two cardiac phases, are separate cases that nothing in the layout ties together.
Drawn one case at a time, a validation case keeps its look-alikes among the training cases
and its Dice measures how well the model recalls them (README, "Your own data": on
CVC-ClinicDB and ACDC it did).

The shipped tasks (``data.VALIDATION_CASES``) keep the draw their models were picked on.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .. import datasets

LOOKALIKE = 0.95  # two cases whose thumbnails correlate above this are one group
THUMBNAIL = {2: (24, 24), 3: (12, 12, 12)}  # the grid a case is compared on


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A channels-first image or volume -> its channel mean, area-averaged onto
    ``THUMBNAIL`` and scaled to zero mean and unit norm (a flat image: zeros)."""
    x = torch.from_numpy(np.asarray(image, np.float32)).mean(0)[None, None]
    pool = F.adaptive_avg_pool2d if x.ndim == 4 else F.adaptive_avg_pool3d
    a = pool(x, THUMBNAIL[x.ndim - 2]).flatten().double().numpy()
    a -= a.mean()
    norm = np.linalg.norm(a)
    return a / norm if norm > 1e-9 * max(1.0, np.abs(a).max()) else np.zeros_like(a)


def lookalike_groups(thumbnails: np.ndarray) -> list[list[int]]:
    """Cases (rows of unit thumbnails) joined wherever two correlate above ``LOOKALIKE``, and
    through chains of such pairs: the groups, each in case order, in order of first case."""
    parent = list(range(len(thumbnails)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    close = np.triu(thumbnails @ thumbnails.T > LOOKALIKE, k=1)
    for i, j in zip(*np.nonzero(close)):
        parent[root(int(j))] = root(int(i))
    groups: dict[int, list[int]] = {}
    for i in range(len(thumbnails)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def draw(groups: list[list[int]], n_val: int, seed: int) -> set[int]:
    """Whole groups, in a seeded order, while they fit in ``n_val`` cases: the validation
    cases, so that look-alikes never straddle the split.  Where none fits, the smallest group
    if it is at most twice ``n_val`` (one patient's two phases, where a tenth is one case);
    else (cases that all look alike, as CT bodies in air may) cases one at a time, as the
    shipped tasks draw them."""
    held: set[int] = set()
    order = np.random.default_rng(seed).permutation(len(groups))
    for g in order:
        if len(held) + len(groups[g]) <= n_val:
            held.update(groups[g])
    if not held and len(smallest := min((groups[g] for g in order), key=len)) <= 2 * n_val:
        held = set(smallest)
    if not held:
        n = sum(map(len, groups))
        held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return held


@functools.lru_cache(maxsize=8)
def validation_indices(pairs: tuple, n_val: int, seed: int) -> frozenset:
    """``draw`` from the look-alike groups of ``pairs`` (resolved image, label paths), read
    once per process."""
    thumbs = np.stack([thumbnail(datasets.read_image(image)) for image, _ in pairs])
    return frozenset(draw(lookalike_groups(thumbs), n_val, seed))

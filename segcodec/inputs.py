"""An input as C takes it, in numpy: a photograph's intensities, the manifest's normalisation,
and linear resampling to the model's working grid.

The clinic's encoder (``api.encode``, with ``compressor.Compressor``) builds C's input here,
in float64, without torch.  Training and the bench build theirs in torch
(``transforms.working_grid``): the same formulas, which the tests hold to agree within float32
rounding.  The resampling is PyTorch's ``interpolate`` (linear, ``align_corners=False``;
antialiased when a 2D image shrinks) written as one weight matrix per axis.
"""
from __future__ import annotations

import functools

import numpy as np

from . import backend
from .errors import InputError


def photo_intensities(array: np.ndarray, who: str = "this model") -> np.ndarray:
    """A photograph (for ``fixed`` normalisation) on its 0..255 scale.

    uint8 and uint16 are read at their full range (uint16 65535 -> 255), other integer
    types (an ``np.array`` of Python ints is int64) by their values as 8 or 16 bits, bool as
    0/255, and floats in the convention of skimage and torchvision, [0, 1]; anything else is
    refused rather than coded as a near-black or saturated image.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    # A grey image out of a photograph's range is most likely a CT or MR slice: no rescaling
    # would make it one of this model's photographs.
    grey = array.ndim == 3 and array.shape[0] == 1
    slice_hint = "a grey image of such values is more likely a CT or MR slice, which needs a " \
        "model trained on those (--model)"
    extra = f"; {slice_hint}" if grey else ""
    if array.dtype.kind in "iu":
        if array.min() < 0:
            raise InputError(f"{who} takes photographs; this {array.dtype} image has negative "
                             f"values{extra}")
        top = np.iinfo(array.dtype).max if array.dtype in (np.uint8, np.uint16) else \
            255 if array.max() <= 255 else 65535 if array.max() <= 65535 else None
        if top is None:
            raise InputError(f"{who} takes 8- or 16-bit photographs; this {array.dtype} "
                             f"image reaches {array.max()}{extra}")
        return _scaled(array, 255.0 / top)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        advice = slice_hint if grey else "scale it, or pass uint8 for 0..255"
        raise InputError(f"{who} takes float images in [0, 1] (this one spans "
                         f"{low:g}..{high:g}); {advice}")
    return _scaled(array, 255.0)


def _scaled(array: np.ndarray, factor: float) -> np.ndarray:
    """``array.astype(np.float64) * factor`` (in its layout), without a second copy."""
    out = array.astype(np.float64)
    out *= factor
    return out


def _affine(spec: dict, x: np.ndarray) -> tuple:
    """The normalisation as (scale, offset) per channel, broadcasting over (C, *spatial):
    ``fixed`` and ``ct`` from the manifest, ``zscore`` from the image (mean and the unbiased
    std, as torch.std; float64 sums)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    if spec["kind"] == "fixed":
        std = np.asarray(spec["std"], dtype=np.float64).reshape(shape)
        return spec["scale"] / std, -np.asarray(spec["mean"], dtype=np.float64).reshape(shape) / std
    if spec["kind"] == "ct":
        return 1.0 / spec["std"], -spec["mean"] / spec["std"]
    if spec["kind"] == "zscore":
        mean = float(x.mean(dtype=np.float64))
        std = float(x.std(ddof=1, dtype=np.float64)) if x.size > 1 else 0.0
        std = std if std > 0 else 1.0
        return 1.0 / std, -mean / std
    raise ValueError(f"unknown normalisation {spec['kind']!r}")


def _taps(size_in: int, size_out: int, antialias: bool) -> tuple:
    """Per output index along one axis, (first input index, weights of the consecutive
    inputs it takes), as PyTorch's linear resampling with ``align_corners=False`` computes
    them: a triangle filter, widened to the shrink factor and renormalised at the edges
    where ``antialias``."""
    scale = size_in / size_out
    taps = []
    for i in range(size_out):
        if antialias:
            support = max(scale, 1.0)
            centre = scale * (i + 0.5)
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), size_in)
            w = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - centre + 0.5) / support))
            w /= w.sum()
        else:
            src = max(scale * (i + 0.5) - 0.5, 0.0)
            lo = int(src)
            frac = src - lo
            w = np.array([1.0 - frac, frac]) if lo + 1 < size_in else np.array([1.0])
        taps.append((lo, w))
    return tuple(taps)


@functools.lru_cache(maxsize=64)
def _band(size_in: int, size_out: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """``_taps`` as two arrays: the input index of each output's j-th tap, (size_out, taps),
    and its weight (0 past an output's last tap, whose index then repeats the last one)."""
    taps = _taps(size_in, size_out, antialias)
    width = max(w.size for _, w in taps)
    index = np.empty((size_out, width), dtype=np.intp)
    weight = np.zeros((size_out, width))
    for i, (lo, w) in enumerate(taps):
        index[i] = np.minimum(np.arange(lo, lo + width), lo + w.size - 1)
        weight[i, :w.size] = w
    index.flags.writeable = weight.flags.writeable = False
    return index, weight


def resample(x: np.ndarray, shape) -> np.ndarray:
    """Linear resampling of (C, *spatial), any real dtype, to ``shape`` (float64);
    antialiased when shrinking in 2D.
    Each output row is the weighted sum of the few input rows its taps name, so a large
    photograph costs its pixels, not its pixels times the grid; the sum runs over the taps,
    every output row at once."""
    shape = tuple(int(s) for s in shape)
    if tuple(x.shape[1:]) == shape:
        return x.astype(np.float64)
    antialias = len(shape) == 2 and any(t < s for t, s in zip(shape, x.shape[1:]))
    with backend.blas_limits():
        for axis, size in enumerate(shape, start=1):
            if x.shape[axis] != size or antialias:
                moved = np.moveaxis(x, axis, 0)
                index, weight = _band(moved.shape[0], size, antialias)
                rest = moved.shape[1:]
                out = np.empty((size, 1, int(np.prod(rest))))
                # Output rows in chunks of about 2^21 gathered input values: a photograph's
                # every row is read once, never all of them as float64 at once.
                step = max(1, (1 << 21) // max(1, index.shape[1] * out.shape[2]))
                for lo in range(0, size, step):
                    rows = moved[index[lo:lo + step]].reshape(-1, index.shape[1], out.shape[2])
                    np.matmul(weight[lo:lo + step, None, :], rows.astype(np.float64, copy=False),
                              out=out[lo:lo + step])
                x = np.moveaxis(out.reshape(size, *rest), 0, axis)
    return x


def working_grid(image: np.ndarray, spec: dict, shape) -> np.ndarray:
    """Channels-first image -> C's input (C, *shape), float64: the manifest's normalisation
    (``transforms.normalise`` says what each kind is), then linear resampling to ``shape``.

    Computed the other way round, resampling first: both are affine, and the resampling's
    weights sum to 1, so this is the same to float64 rounding, and a 12-megapixel photograph
    is never a full-size float64 copy (``ct`` clips first, at full size: clipping is not
    affine)."""
    x = np.asarray(image)
    if not np.can_cast(x.dtype, np.float32, "safe"):
        x = x.astype(np.float32)  # the intensities as float32 holds them, as torch reads them
    if spec["kind"] == "ct":
        x = np.clip(x.astype(np.float64), spec["low"], spec["high"])
    scale, offset = _affine(spec, x)
    out = resample(x, shape).astype(np.float64, copy=False)
    out *= scale
    out += offset
    return out

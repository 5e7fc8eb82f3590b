"""Intensity normalisation and resampling to and from a model's working grid.

Encoding and training both go through these functions, so the network sees the same input
in both places.  The manifest's ``normalisation`` entry names the scheme.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .inputs import photo_intensities  # noqa: F401 (re-exported for training)


def normalise(image: np.ndarray, spec: dict) -> torch.Tensor:
    """Channels-first image (C, *spatial), any real dtype -> float32 tensor (1, C, *spatial).

    ``fixed``: (x * scale - mean[c]) / std[c], for 8-bit photographs.
    ``zscore``: (x - mean) / std over the whole image, for MRI whose scale is arbitrary.
    ``ct``: x clipped to [low, high], then (x - mean) / std with the training set's statistics
    (nnU-Net's CT scheme: Hounsfield units mean the same in every scan).
    """
    if spec["kind"] == "zscore":
        # mean and std in float64: float32 sums lose digits over a volume
        x64 = _float64_copy(image)
        std = x64.std().item()
        return x64.sub_(x64.mean()).div_(std if std > 0 else 1.0).float()
    array = np.ascontiguousarray(image, dtype=np.float32)
    x = torch.from_numpy(array)[None]
    if spec["kind"] == "fixed":
        mean, std = _channel_constants(tuple(np.atleast_1d(spec["mean"]).tolist()),
                                       tuple(np.atleast_1d(spec["std"]).tolist()), x.ndim)
        # In place only where x is a copy of its own: a caller's float32 array is its own.
        x = x * spec["scale"] if np.may_share_memory(array, image) else x.mul_(spec["scale"])
        return x.sub_(mean).div_(std)
    if spec["kind"] == "ct":
        return ((x.clamp(spec["low"], spec["high"]) - spec["mean"]) / spec["std"]).float()
    raise ValueError(f"unknown normalisation {spec['kind']!r}")


def _float64_copy(image: np.ndarray) -> torch.Tensor:
    """A contiguous float64 tensor (1, *shape) of the image's values as float32 holds them,
    made in one copy from the image's own layout: dtypes float32 holds exactly are cast
    straight to float64, the others rounded to float32 first (as MRI intensities always
    were)."""
    image = np.asarray(image)
    if not np.can_cast(image.dtype, np.float32, "safe"):
        image = image.astype(np.float32)
    out = torch.empty((1, *image.shape), dtype=torch.float64)
    np.copyto(out.numpy()[0], image)
    return out


@functools.lru_cache(maxsize=64)
def _channel_constants(mean: tuple, std: tuple, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``fixed`` normalisation's per-channel mean and std, shaped to broadcast over an
    (N, C, *spatial) tensor of ``ndim`` dimensions: built once, never written to."""
    shape = (1, -1) + (1,) * (ndim - 2)
    return (torch.tensor(mean, dtype=torch.float32).view(shape),
            torch.tensor(std, dtype=torch.float32).view(shape))


def resample(x: torch.Tensor, shape) -> torch.Tensor:
    """Linear resampling of (N, C, *spatial) to ``shape``; antialiased when shrinking in 2D."""
    shape = tuple(int(s) for s in shape)
    if tuple(x.shape[2:]) == shape:
        return x
    if x.ndim == 4:
        shrink = any(t < s for t, s in zip(shape, x.shape[2:]))
        return F.interpolate(x, size=shape, mode="bilinear", align_corners=False,
                             antialias=shrink)
    return F.interpolate(x, size=shape, mode="trilinear", align_corners=False)


def working_grid(image: np.ndarray, spec: dict, shape) -> torch.Tensor:
    """Channels-first image -> C's (or a reference segmentor's) input, (1, C, *shape): the
    manifest's normalisation ``spec``, then linear resampling to the working grid ``shape``.
    Encoding, training and the bench all build their inputs here."""
    return resample(normalise(image, spec), shape)


# Outputs up to this many voxels are upsampled whole; larger ones a slab of about this many
# voxels at a time, so that the labels (1 byte per voxel) are all that grows with the output.
SLAB_VOXELS = 1 << 18


def labels_from_logits(logits: torch.Tensor, shape) -> np.ndarray:
    """Class logits (1, n, *work) -> uint8 labels at ``shape``.

    The logits are upsampled, not the labels, so boundaries stay smooth at the input's size.
    The labels are bit-identical to the argmax of ``resample(logits, shape)``, the first class
    winning ties, for finite logits.  Peak memory: one byte per output voxel, plus a constant
    (``SLAB_VOXELS``): large outputs are built a slab of rows at a time (``_labels_by_slabs``)
    wherever the interpolation is separable, which is on the CPU and not antialiased.
    """
    logits = logits.float()
    shape = tuple(int(s) for s in shape)
    if (int(np.prod(shape)) > SLAB_VOXELS and logits.device.type == "cpu"
            and tuple(logits.shape[2:]) != shape and not _antialiased(logits, shape)
            and (arithmetic := _linear_arithmetic()) is not None):
        return _labels_by_slabs(logits, shape, arithmetic)
    labels, best = None, None
    for c in range(logits.shape[1]):
        labels, best = _running_argmax(resample(logits[:, c:c + 1], shape)[0, 0], c,
                                       labels, best)
    return labels.cpu().numpy()


def _running_argmax(up: torch.Tensor, c: int, labels, best):
    """Class ``c``'s upsampled logits into the running maximum: one class at a time, so the
    memory does not grow with the number of classes."""
    if best is None:  # the first class
        if labels is None:
            return torch.zeros(up.shape, dtype=torch.uint8, device=up.device), up.clone()
        return labels.zero_(), up.clone()
    labels.masked_fill_(up > best, c)
    return labels, torch.maximum(best, up, out=best)


def _antialiased(logits: torch.Tensor, shape: tuple) -> bool:
    return logits.ndim == 4 and any(t < s for t, s in zip(shape, logits.shape[2:]))


def _labels_by_slabs(logits: torch.Tensor, shape: tuple, arithmetic: str) -> np.ndarray:
    """``labels_from_logits`` one slab of output rows (first axis) at a time."""
    labels = torch.empty(shape, dtype=torch.uint8)
    slabs = [_slabs(logits[:, c:c + 1], shape, arithmetic) for c in range(logits.shape[1])]
    for parts in zip(*slabs):
        rows, best = parts[0][0], None
        for c, (_, up) in enumerate(parts):
            _, best = _running_argmax(up, c, labels[rows], best)  # a view: written in place
    return labels.numpy()


def _slabs(x: torch.Tensor, shape: tuple, arithmetic: str):
    """(rows, values) for successive slabs of output rows of ``resample(x, shape)[0, 0]``.

    The other axes are interpolated by PyTorch on just the input rows a slab needs, the first
    axis left as it is (an identity there: weights 1 and 0, so the values are PyTorch's own);
    then each output row mixes its two input rows with PyTorch's weights and in its order of
    rounding (``arithmetic``), which makes every value bit-identical to a whole upsampling.
    """
    fused, lerp = _ARITHMETIC[arithmetic]
    i0, i1, w0, w1 = _linear_weights(x.shape[2], shape[0], fused)
    step = max(1, SLAB_VOXELS // int(np.prod(shape[1:])))
    axes = (-1,) + (1,) * (len(shape) - 1)

    def inner(first: int, last: int) -> torch.Tensor:
        if last <= first:
            return torch.empty((0, *shape[1:]))
        return resample(x[:, :, first:last], (last - first, *shape[1:]))[0, 0]

    done, at = inner(0, 0), 0  # input rows [at, at + len(done)), the other axes interpolated
    for r in range(0, shape[0], step):
        rows = slice(r, min(r + step, shape[0]))
        first, last = int(i0[rows][0]), int(i1[rows][-1]) + 1  # the input rows it mixes
        # Upsampling, consecutive slabs share input rows: each is interpolated once.
        have = max(first, at + len(done))
        done = torch.cat([done[max(0, first - at):], inner(have, last)])
        at = first
        yield rows, lerp(done[i0[rows] - first], done[i1[rows] - first],
                         w0[rows].view(axes), w1[rows].view(axes))


def _linear_weights(n_in: int, n_out: int, fused: bool):
    """The input indices and weights of PyTorch's linear interpolation (align_corners=False)
    from ``n_in`` to ``n_out`` samples, in float32 as its CPU kernel computes them: the source
    position ``scale * (i + 0.5) - 0.5`` with one rounding where ``fused`` (a fused multiply-
    add, as its AVX2 build does) or two."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    i = torch.arange(n_out, dtype=torch.float32) + 0.5
    if fused:  # float64 holds the product exactly; one rounding to float32 is the FMA's
        real = (scale.double() * i.double() - 0.5).float()
    else:
        real = scale * i - 0.5
    real = real.clamp(min=0)
    i0 = real.floor().long().clamp(max=n_in - 1)
    w1 = (real - i0.float()).clamp(0, 1)
    i1 = i0 + (i0 < n_in - 1).long()
    return i0, i1, 1 - w1, w1


# How PyTorch's CPU kernel may round ``a * wa + b * wb``, fastest first: its AVX2 build fuses
# it into ``fma(a, wa, b * wb)``, which addcmul gives where it too is fused, and float64 (which
# holds ``a * wa`` exactly) otherwise; other builds round twice.  name -> (fused, lerp)
_ARITHMETIC = {
    "addcmul": (True, lambda a, b, wa, wb: torch.addcmul(b * wb, a, wa)),
    "float64": (True, lambda a, b, wa, wb: (a.double() * wa.double() + (b * wb).double()).float()),
    "unfused": (False, lambda a, b, wa, wb: a * wa + b * wb),
}


@functools.cache
def _linear_arithmetic() -> str | None:
    """The first of ``_ARITHMETIC`` that reproduces this machine's PyTorch on large
    upsamplings, 2D and 3D, bit for bit; None when none does, and then outputs are upsampled
    whole."""
    gen = torch.Generator().manual_seed(0)
    probes = [(torch.randn(1, 1, *grid, generator=gen), out)
              for grid, out in (((64, 64), (700, 500)), ((32, 48, 32), (70, 90, 60)))]
    for name in _ARITHMETIC:
        if all(torch.equal(torch.cat([v for _, v in _slabs(x, out, name)]),
                           resample(x, out)[0, 0]) for x, out in probes):
            return name
    return None

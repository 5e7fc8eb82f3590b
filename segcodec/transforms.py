"""Intensity normalisation and resampling to and from a model's working grid.

Encoding and training both go through these functions, so the network sees the same input
in both places.  The manifest's ``normalisation`` entry names the scheme.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
    if array.dtype.kind in "iu":
        if array.min() < 0:
            raise InputError(f"{who} takes photographs; this {array.dtype} image has negative "
                             "values")
        top = np.iinfo(array.dtype).max if array.dtype in (np.uint8, np.uint16) else \
            255 if array.max() <= 255 else 65535 if array.max() <= 65535 else None
        if top is None:
            raise InputError(f"{who} takes 8- or 16-bit photographs; this {array.dtype} "
                             f"image reaches {array.max()}")
        return array.astype(np.float64) * (255.0 / top)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise InputError(f"{who} takes float images in [0, 1] (this one spans "
                         f"{low:g}..{high:g}); scale it, or pass uint8 for 0..255")
    return array.astype(np.float64) * 255.0


def normalise(image: np.ndarray, spec: dict) -> torch.Tensor:
    """Channels-first image (C, *spatial), any real dtype -> float32 tensor (1, C, *spatial).

    ``fixed``: (x * scale - mean[c]) / std[c], for 8-bit photographs.
    ``zscore``: (x - mean) / std over the whole image, for MRI whose scale is arbitrary.
    ``ct``: x clipped to [low, high], then (x - mean) / std with the training set's statistics
    (nnU-Net's CT scheme: Hounsfield units mean the same in every scan).
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    if spec["kind"] == "fixed":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = torch.tensor(spec["mean"], dtype=torch.float32).view(shape)
        std = torch.tensor(spec["std"], dtype=torch.float32).view(shape)
        return (x * spec["scale"] - mean) / std
    if spec["kind"] == "ct":
        return ((x.clamp(spec["low"], spec["high"]) - spec["mean"]) / spec["std"]).float()
    if spec["kind"] == "zscore":
        x64 = x.double()
        std = x64.std().item()
        return ((x64 - x64.mean()) / (std if std > 0 else 1.0)).float()
    raise ValueError(f"unknown normalisation {spec['kind']!r}")


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


def labels_from_logits(logits: torch.Tensor, shape) -> np.ndarray:
    """Class logits (1, n, *work) -> uint8 labels at ``shape``.

    The logits are upsampled, not the labels, so boundaries stay smooth at the input's size.
    One class is upsampled at a time and kept as a running maximum, so the peak memory is
    10 bytes per output voxel whatever the number of classes (all classes at once, then an
    int64 argmax, took 4n + 9).  Each class's upsampling is the same kernel call on the same
    numbers, and the first class wins ties as in argmax: for finite logits the labels are
    bit-identical.
    """
    logits = logits.float()
    best = resample(logits[:, :1], shape)[0, 0]
    if tuple(logits.shape[2:]) == tuple(shape):  # resample returned the caller's logits
        best = best.clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for c in range(1, logits.shape[1]):
        up = resample(logits[:, c:c + 1], shape)[0, 0]
        labels.masked_fill_(up > best, c)
        torch.maximum(best, up, out=best)
    return labels.cpu().numpy()

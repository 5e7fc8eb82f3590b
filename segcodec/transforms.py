"""Intensity normalisation and resampling to and from a model's working grid.

Encoding and training both go through these functions, so the network sees the same input
in both places.  The manifest's ``normalisation`` entry names the scheme.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def normalise(image: np.ndarray, spec: dict) -> torch.Tensor:
    """Channels-first image (C, *spatial), any real dtype -> float32 tensor (1, C, *spatial).

    ``fixed``: (x * scale - mean[c]) / std[c], for 8-bit photographs.
    ``zscore``: (x - mean) / std over the whole image, for MRI whose scale is arbitrary.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    if spec["kind"] == "fixed":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = torch.tensor(spec["mean"], dtype=torch.float32).view(shape)
        std = torch.tensor(spec["std"], dtype=torch.float32).view(shape)
        return (x * spec["scale"] - mean) / std
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
    """
    return resample(logits.float(), shape).argmax(1)[0].to(torch.uint8).cpu().numpy()

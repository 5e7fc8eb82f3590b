"""A quick-look PNG of a label map over its image (``segcodec segment --overlay``).

The ``.sgc`` holds no image, so the picture needs the original beside it (``--source``).
2D: the image with the labels blended in; 3D: three orthogonal slices through the labels'
centre (the volume's centre when there are none), side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ALPHA = 0.45


def _grey(image: np.ndarray) -> np.ndarray:
    """Any image -> uint8 on its own 1st..99th percentile range (a display window)."""
    x = image.astype(np.float64)
    lo, hi = np.percentile(x, [1, 99]) if x.size else (0.0, 1.0)
    return (np.clip((x - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def _blend(image: np.ndarray, labels: np.ndarray, colours) -> np.ndarray:
    rgb = np.repeat(_grey(image)[..., None], 3, -1) if image.ndim == 2 else _grey(image)
    palette = np.asarray(colours, dtype=np.float64)
    out = rgb.astype(np.float64)
    mask = labels > 0
    out[mask] = (1 - ALPHA) * out[mask] + ALPHA * palette[labels[mask]]
    return out.astype(np.uint8)


def picture(image: np.ndarray, labels: np.ndarray, colours) -> np.ndarray:
    """(H, W[, 3]) or (I, J, K) image and labels of its shape -> an RGB picture."""
    if labels.ndim == 2:
        return _blend(image, labels, colours)
    where = np.argwhere(labels > 0)
    centre = where.mean(0).round().astype(int) if len(where) else np.array(labels.shape) // 2
    views = []
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = int(centre[axis])
        views.append(np.rot90(_blend(image[tuple(index)], labels[tuple(index)], colours)))
    height = max(v.shape[0] for v in views)
    padded = [np.pad(v, ((0, height - v.shape[0]), (0, 2), (0, 0))) for v in views]
    return np.concatenate(padded, axis=1)


def write(path, image: np.ndarray, labels: np.ndarray, colours) -> Path:
    from .io import atomic_write
    pic = Image.fromarray(picture(image, labels, colours))
    if max(pic.size) < 256:  # small volumes: enlarge for a look, without smoothing labels
        scale = -(-256 // max(pic.size))
        pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    return atomic_write(Path(path), lambda tmp: pic.save(tmp, format="PNG"))

"""PNG, JPEG and TIFF through Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..container import MAX_PIXELS
from ..errors import InputError
from . import Loaded


def read(path: Path) -> Loaded:
    try:
        with Image.open(path) as opened:  # reads the header only
            # The format's limit (format_spec.md §1.6), checked before any pixel is decoded;
            # Pillow's own MAX_IMAGE_PIXELS is the caller's to set, not ours.
            if opened.width * opened.height > MAX_PIXELS:
                raise InputError(f"{path}: declares {opened.width}x{opened.height} pixels, "
                                 f"more than the format's limit of {MAX_PIXELS}")
            im = ImageOps.exif_transpose(opened)  # as viewers show it (camera rotation)
            if im.mode in ("RGB", "L", "I;16", "I", "F"):
                array = np.asarray(im)
            elif im.mode in ("1", "LA", "I;16B", "I;16L"):
                array = np.asarray(im.convert("L") if im.mode != "I;16B" else im.convert("I"))
            else:  # palette, RGBA, CMYK, YCbCr...: to RGB, alpha dropped
                array = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    return Loaded(array=array, kind="2d", source="raster")


def write_labels(path: Path, labels: np.ndarray, n_labels: int) -> None:
    if labels.ndim != 2:
        raise InputError(f"{path}: PNG holds 2D labels; write a 3D label map as .nii.gz or .npy")
    # Two classes are written 0/255, as ISIC masks are, so the mask is visible; more classes
    # keep their indices.
    out = labels * np.uint8(255) if n_labels == 2 else labels.astype(np.uint8)
    Image.fromarray(out, mode="L").save(path, format="PNG", optimize=True)

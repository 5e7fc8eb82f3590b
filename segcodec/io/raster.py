"""PNG, JPEG and TIFF through Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..container import MAX_PIXELS
from ..errors import InputError
from . import Loaded


def read(path: Path, check_2d=None) -> Loaded:
    try:
        with Image.open(path) as opened:  # reads the header only
            # The format's limit (format_spec.md §1.6), checked before any pixel is decoded;
            # Pillow's own MAX_IMAGE_PIXELS is the caller's to set, not ours.
            if opened.width * opened.height > MAX_PIXELS:
                raise InputError(f"{path}: declares {opened.width}x{opened.height} pixels, "
                                 f"more than the format's limit of {MAX_PIXELS}")
            if check_2d is not None:
                check_2d((opened.height, opened.width))
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


def write_labels(path: Path, labels: np.ndarray, colours: list) -> None:
    """A 2D label map as an indexed PNG: each pixel holds its label's value, as the sidecar,
    .npy and NIfTI outputs do, and the palette (``colours``, RGB per label value) shows it."""
    if labels.ndim != 2:
        raise InputError(f"{path}: PNG holds 2D labels; write a 3D label map as .nii.gz or .npy")
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette([c for colour in colours for c in colour])  # "L" becomes "P"
    image.save(path, format="PNG", optimize=True)

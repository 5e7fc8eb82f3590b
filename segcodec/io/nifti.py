"""NIfTI-1/2 through nibabel; the affine travels with the image and back with the labels."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np

from ..container import MAX_PIXELS
from ..errors import InputError
from . import Loaded

# nibabel.nifti1 imports pydicom to parse the DICOM header extension (code 2), which segcodec
# never reads: a third of a NIfTI encode's start-up (bench/results/startup.md).  Where the
# command line owns the process, that import is blocked (with no other thread that could
# import pydicom meanwhile): nibabel then keeps such an extension as bytes for the rest of
# the process (its Nifti1DicomExtension is disabled), and a later `import pydicom` finds the
# package.  A library user's nibabel is left whole.
if "segcodec.cli.main" not in sys.modules or "pydicom" in sys.modules \
        or threading.active_count() > 1:
    import nibabel as nib
else:
    sys.modules["pydicom"] = None
    try:
        import nibabel as nib
    finally:
        del sys.modules["pydicom"]


def read(path: Path, volume: int | None = None) -> Loaded:
    """A 3D volume (or, with ``volume``, one volume of a 4D series), or a 2D image.

    The declared shape is checked against the format's limit before any voxel is read, so a
    small compressed file cannot make us inflate gigabytes.
    """
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 4:
        if volume is None:
            raise InputError(f"{path}: a 4D NIfTI of {shape[3]} volumes; pick one with "
                             f"--volume N (API: volume=N), N in 0..{shape[3] - 1}")
        if not 0 <= volume < shape[3]:
            raise InputError(f"{path}: --volume {volume} is out of range 0..{shape[3] - 1}")
        shape = shape[:3]
    elif volume is not None:
        raise InputError(f"{path}: --volume applies to 4D NIfTI; this one has shape {shape}")
    if len(shape) not in (2, 3):
        raise InputError(f"{path}: NIfTI image has shape {img.shape}; segcodec takes a 2D "
                         "image or a 3D volume")
    pixels = int(np.prod(shape, dtype=np.int64))
    if pixels > MAX_PIXELS:
        raise InputError(f"{path}: declares {pixels} voxels, more than the limit of "
                         f"{MAX_PIXELS}")
    try:
        extra = (0,) * (len(img.shape) - 4)  # trailing axes of length 1
        data = img.dataobj[(slice(None),) * 3 + (volume,) + extra] if volume is not None \
            else img.dataobj
        array = np.asanyarray(data).reshape(shape)
    except Exception as exc:
        raise InputError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    return Loaded(array=array, kind=f"{len(shape)}d", source="nifti",
                  affine=np.asarray(img.affine))


def write_labels(path: Path, labels: np.ndarray, affine: np.ndarray | None) -> None:
    data = labels[..., None] if labels.ndim == 2 else labels
    img = nib.Nifti1Image(data.astype(np.uint8), np.eye(4) if affine is None else affine)
    code = 0 if affine is None else 1  # 1 = scanner anat
    img.set_sform(img.affine, code=code)
    img.set_qform(img.affine, code=code)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"segcodec labels"
    nib.save(img, str(path))

"""NIfTI-1/2 through nibabel; the affine travels with the image and back with the labels."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from . import Loaded


def read(path: Path) -> Loaded:
    try:
        img = nib.load(path)
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"{path}: NIfTI image has shape {array.shape}; segcodec takes one 3D "
                         "volume (a 4D series must be split first)")
    return Loaded(array=array, kind="3d", source="nifti", affine=np.asarray(img.affine))


def write_labels(path: Path, labels: np.ndarray, affine: np.ndarray | None) -> None:
    data = labels[..., None] if labels.ndim == 2 else labels
    img = nib.Nifti1Image(data.astype(np.uint8), np.eye(4) if affine is None else affine)
    code = 0 if affine is None else 1  # 1 = scanner anat
    img.set_sform(img.affine, code=code)
    img.set_qform(img.affine, code=code)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"segcodec labels"
    nib.save(img, str(path))

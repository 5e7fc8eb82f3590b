"""DICOM through pydicom: one file (2D, or a multi-frame volume) or a series folder (3D).

Only pixel data and geometry are read into segcodec; no other attribute is kept, so nothing
that identifies a patient can reach a ``.sgc``.  Geometry is converted from DICOM's LPS+ to the
RAS+ affine of NIfTI (format_spec.md §2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from ..errors import InputError
from . import Loaded

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pixels(ds, path) -> np.ndarray:
    try:
        return np.asarray(apply_modality_lut(ds.pixel_array, ds))
    except Exception as exc:  # missing pixel data, unsupported transfer syntax...
        raise InputError(f"{path}: cannot decode DICOM pixel data ({exc})") from None


def _read(path: Path, stop_before_pixels: bool = False):
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from None


def _axes(ds):
    """Row and column direction cosines and spacings, or None when the file has no geometry."""
    try:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        spacing = np.asarray(ds.PixelSpacing, dtype=np.float64)
        origin = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    except (AttributeError, ValueError, TypeError):
        return None
    # iop[:3] points along a row (increasing column), iop[3:] down a column (increasing row);
    # PixelSpacing is (between rows, between columns).
    return iop[:3] * spacing[1], iop[3:] * spacing[0], origin


def read_file(path: Path) -> Loaded:
    ds = _read(path)
    pixels = _pixels(ds, path)
    if pixels.ndim == 3 and getattr(ds, "NumberOfFrames", 1) > 1:
        raise InputError(f"{path}: multi-frame DICOM is not supported; pass a series folder")
    if pixels.ndim == 3:  # RGB single frame
        return Loaded(array=pixels, kind="2d", source="dicom")
    axes = _axes(ds)
    affine = None
    if axes is not None:
        col_step, row_step, origin = axes
        lps = np.eye(4)
        # Array index (row, column) -> world: origin + row * row_step + column * col_step.
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = (
            row_step, col_step, np.cross(col_step, row_step), origin)
        affine = _LPS_TO_RAS @ lps
    return Loaded(array=pixels, kind="2d", source="dicom", affine=affine)


def read_series(folder: Path) -> Loaded:
    """All DICOM files of one series in a folder -> volume (column, row, slice), as dcm2niix."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    headers = []
    for p in files:
        try:
            headers.append((p, pydicom.dcmread(p, stop_before_pixels=True)))
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
    if not headers:
        raise InputError(f"{folder}: no DICOM files in this folder")
    series = {getattr(ds, "SeriesInstanceUID", None) for _, ds in headers}
    if len(series) > 1:
        raise InputError(f"{folder}: holds {len(series)} DICOM series; pass one series per folder")
    axes = _axes(headers[0][1])
    if axes is not None:
        col_step, row_step, _ = axes
        normal = np.cross(col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step))
        key = [float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))
               for _, ds in headers]
    else:
        key = [int(getattr(ds, "InstanceNumber", 0) or 0) for _, ds in headers]
    order = np.argsort(key, kind="stable")
    slices = [_pixels(_read(headers[i][0]), headers[i][0]) for i in order]
    if len({s.shape for s in slices}) != 1 or slices[0].ndim != 2:
        raise InputError(f"{folder}: slices differ in size or are not single-frame grayscale")
    volume = np.stack(slices, axis=-1).transpose(1, 0, 2)  # (column, row, slice)
    affine = None
    if axes is not None:
        col_step, row_step, origin = axes
        first = np.asarray(headers[order[0]][1].ImagePositionPatient, dtype=float)
        last = np.asarray(headers[order[-1]][1].ImagePositionPatient, dtype=float)
        slice_step = (last - first) / (len(slices) - 1) if len(slices) > 1 else normal
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = col_step, row_step, slice_step, first
        affine = _LPS_TO_RAS @ lps
    return Loaded(array=volume, kind="3d", source="dicom", affine=affine)

"""Mutated DICOM inputs for ``python -m bench fuzz``: every failure must be an ``SgcError``.

The seeds are pydicom's own test files (CT, MR, RGB, palette, multi-frame, RLE, JPEG,
big-endian, truncated, other object kinds) and a four-slice CT series made from one of them.
A mutated input changes one to three attributes that the readers use (geometry, pixel
description, rescale, frames, identifiers, transfer syntax) to a value of the wrong
multiplicity, type or range, or removes it; a share get byte-level edits after writing, and a
series has one slice mutated.  Each input is encoded (``segcodec.encode``, forced, so that the
domain check does not stop it before the pixels are read).
"""
from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import UID

from .common import byte_edits

SEED_FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "examples_palette.dcm",
              "SC_rgb_rle_2frame.dcm", "rtdose_1frame.dcm", "liver_1frame.dcm",
              "MR_small_bigendian.dcm", "JPEG2000.dcm", "SC_rgb_jpeg.dcm", "MR_truncated.dcm",
              "emri_small.dcm", "image_dfl.dcm", "rtstruct.dcm")
# keyword -> VR, for attributes added where a seed lacks them
ATTRIBUTES = {"PixelSpacing": "DS", "ImageOrientationPatient": "DS",
              "ImagePositionPatient": "DS", "Rows": "US", "Columns": "US",
              "NumberOfFrames": "IS", "BitsAllocated": "US", "BitsStored": "US",
              "HighBit": "US", "SamplesPerPixel": "US", "PixelRepresentation": "US",
              "PhotometricInterpretation": "CS", "RescaleSlope": "DS", "RescaleIntercept": "DS",
              "SliceThickness": "DS", "SpacingBetweenSlices": "DS", "InstanceNumber": "IS",
              "SeriesInstanceUID": "UI", "SOPClassUID": "UI", "SeriesNumber": "IS",
              "PlanarConfiguration": "US", "PixelData": "OB"}
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                     "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
                     "1.2.840.10008.1.2.1.99", "1.2.3.4", "")


def seeds() -> list[pydicom.Dataset]:
    """The seed datasets pydicom ships (those this install has)."""
    out = []
    for name in SEED_FILES:
        path = get_testdata_file(name, download=False)
        if path:
            out.append(pydicom.dcmread(path, force=True))
    return out


def _value(rng, vr: str):
    """A value of the wrong multiplicity, type or range for an attribute of this VR."""
    numbers = [0, 1, -1, 0.5, 1e30, -1e30, 65535, 2 ** 31, 3]
    kind = rng.integers(7)
    if kind == 0:
        return ""
    if kind == 1:
        return "abc"
    if kind == 2:
        return "nan\\inf"
    if vr in ("US", "UL"):
        return int(rng.choice([0, 1, 2, 3, 7, 8, 16, 17, 32, 64, 65535]))
    if vr == "OB":
        return rng.bytes(int(rng.choice([0, 1, 7, 100, 5000])))
    if vr == "UI":
        return str(rng.choice(["1.2.3", "", "1.2.840.10008.5.1.4.1.1.66.4", "x"]))
    count = int(rng.integers(0, 8))
    return [str(rng.choice(numbers)) for _ in range(count)] if vr in ("DS", "IS") else "X"


def mutate(ds: pydicom.Dataset, rng) -> pydicom.Dataset:
    """A copy of ``ds`` with one to three attributes removed or set to a hostile value."""
    ds = copy.deepcopy(ds)
    for _ in range(int(rng.integers(1, 4))):
        keyword = str(rng.choice(list(ATTRIBUTES)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if rng.random() < 0.25:
                    if keyword in ds:
                        delattr(ds, keyword)
                elif keyword == "PixelData" and "PixelData" in ds and rng.random() < 0.5:
                    ds.PixelData = ds.PixelData[:int(rng.integers(len(ds.PixelData) + 1))]
                else:
                    ds.add_new(keyword, ATTRIBUTES[keyword], _value(rng, ATTRIBUTES[keyword]))
            except Exception:  # noqa: BLE001 - pydicom refused the value: the next one
                continue
    if rng.random() < 0.15 and getattr(ds, "file_meta", None) is not None:
        ds.file_meta.TransferSyntaxUID = UID(str(rng.choice(TRANSFER_SYNTAXES)))
    return ds


def _written(ds: pydicom.Dataset, path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds.save_as(path, enforce_file_format=False)
            return True
        except Exception:  # noqa: BLE001 - a value pydicom cannot write: not an input
            return False


def _byte_edits(path: Path, rng) -> None:
    path.write_bytes(byte_edits(path.read_bytes(), rng))


def series_of(ds: pydicom.Dataset, slices: int = 4) -> list[pydicom.Dataset]:
    """``slices`` copies of a one-frame image, stacked along its normal 1 mm apart."""
    out = []
    for i in range(slices):
        s = copy.deepcopy(ds)
        s.ImagePositionPatient = [0.0, 0.0, float(i)]
        s.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        s.InstanceNumber = i + 1
        out.append(s)
    return out


def mutated_input(seed_sets: list, series: list, rng, tmp: Path) -> Path | None:
    """Write one mutated input under ``tmp`` (a file, or a series folder); None where pydicom
    could not write the mutation."""
    target = tmp / "input"
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    if rng.random() < 0.25:  # a series with one slice mutated
        target.mkdir()
        victim = int(rng.integers(len(series)))
        for i, s in enumerate(series):
            if not _written(mutate(s, rng) if i == victim else s, target / f"{i:03d}.dcm"):
                return None
        if rng.random() < 0.2:
            _byte_edits(target / f"{victim:03d}.dcm", rng)
        return target
    if not _written(mutate(seed_sets[int(rng.integers(len(seed_sets)))], rng), target):
        return None
    if rng.random() < 0.2:
        _byte_edits(target, rng)
    return target


def seed_inputs() -> tuple[list, list]:
    """(seed datasets, a four-slice series), as ``mutated_input`` takes them."""
    sets = seeds()
    ct = next(ds for ds in sets if getattr(ds, "Modality", "") == "CT")
    return sets, series_of(ct)

"""Labelled data set folders, as training, ``segcodec evaluate`` and the bench read them.

Two layouts are understood:

- the Medical Segmentation Decathlon / nnU-Net raw layout: ``dataset.json`` (MSD's
  ``modality`` and ``labels: {"0": "background", ...}``, or nnU-Net v2's ``channel_names``,
  ``labels: {"background": 0, ...}`` and ``file_ending``), ``imagesTr/`` + ``labelsTr/`` for
  training and optionally ``imagesTs/`` + ``labelsTs/`` for testing.  nnU-Net's ``_0000``
  channel suffix is understood (one channel file per case).  Images may be NIfTI volumes or
  2D PNG/JPEG files (nnU-Net's 2D natural-image data sets);
- a 2D folder of ``images/`` and ``masks/``: a mask is named as its image, or as its image plus
  ``_`` and a word, as ISIC's ``_segmentation``.

Masks of only 0 and 255 mean background and label 1 (ISIC's convention) in both.

    ds = segcodec.datasets.open("Task04_Hippocampus")
    ds.labels, ds.modality, len(ds.training), len(ds.test)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io as sgio
from . import orientation
from .errors import InputError

__all__ = ["Case", "DataSet", "is_dataset", "open", "cases", "read_truth", "read_case"]

_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path


@dataclass
class DataSet:
    root: Path
    name: str
    ndim: int
    channels: int
    modality: str  # "CT", "MRI", "RGB", or what dataset.json calls the channel
    labels: list[str]
    training: list[Case]
    test: list[Case] = field(default_factory=list)


def is_dataset(root) -> bool:
    root = Path(root)
    return ((root / "imagesTr").is_dir() and (root / "labelsTr").is_dir()) or \
        ((root / "images").is_dir() and (root / "masks").is_dir())


def open(root) -> DataSet:  # noqa: A001 - the data set's counterpart of io.open
    """The data set in the folder ``root``; InputError if it holds none."""
    root = Path(root)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        training = _pairs_2d(root / "images", root / "masks")
        return _described(root, {}, training, [])
    if not ((root / "imagesTr").is_dir() and (root / "labelsTr").is_dir()):
        raise InputError(f"{root}: no data set here: expected imagesTr/ + labelsTr/ (an MSD or "
                         "nnU-Net folder) or images/ + masks/")
    meta = {}
    if (root / "dataset.json").is_file():
        try:
            meta = json.loads((root / "dataset.json").read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{root / 'dataset.json'}: not JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise InputError(f"{root / 'dataset.json'}: not a JSON object")
    training = _pairs_msd(root / "imagesTr", root / "labelsTr")
    more = [p.name for p in sorted((root / "imagesTr").iterdir()) if _further_channel(p)]
    if more:
        raise InputError(f"{root}: cases have several channel files ({more[0]}, ...); "
                         "segcodec trains on one channel per case")
    test = _pairs_msd(root / "imagesTs", root / "labelsTs", required=False) \
        if (root / "imagesTs").is_dir() and (root / "labelsTs").is_dir() else []
    return _described(root, meta, training, test)


def cases(root) -> list[Case]:
    """The cases to score in ``root``: its labelled test cases (``imagesTs/`` +
    ``labelsTs/``) where it has any, else its training cases.  Only the file names are read:
    scoring needs no label names or channel description."""
    root = Path(root)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return _pairs_2d(root / "images", root / "masks")
    for images, labels in (("imagesTs", "labelsTs"), ("imagesTr", "labelsTr")):
        if (root / images).is_dir() and (root / labels).is_dir():
            found = _pairs_msd(root / images, root / labels, required=images == "imagesTr")
            if found:
                return found
    raise InputError(f"{root}: no data set here: expected imagesTr/ + labelsTr/ (an MSD or "
                     "nnU-Net folder), imagesTs/ + labelsTs/, or images/ + masks/")


def _described(root: Path, meta: dict, training, test) -> DataSet:
    if sgio.suffix(training[0].image) in sgio.NIFTI_SUFFIXES:
        import nibabel as nib
        shape = nib.load(training[0].image).shape
        if len(shape) == 4 and shape[3] > 1:
            raise InputError(f"{training[0].image}: {shape[3]} channels in one 4D file; "
                             "segcodec trains on one channel per case")
    probe = sgio.read(training[0].image)
    array = probe.array
    ndim = 3 if probe.kind == "3d" else 2
    channels = 1 if ndim == 3 or array.ndim == 2 else array.shape[-1]
    names = meta.get("channel_names") or meta.get("modality") or {}
    if channels == 3:
        modality = "RGB"
    elif isinstance(names, dict) and names:
        modality = str(names.get("0", next(iter(names.values()))))
        if len(names) > channels:
            raise InputError(f"{root}: dataset.json names {len(names)} channels per case; "
                             "segcodec trains on one channel (or one RGB image) per case")
    else:
        modality = "MRI" if ndim == 3 else "grey"
    return DataSet(root=root, name=str(meta.get("name") or root.name),
                   ndim=ndim, channels=channels, modality=modality,
                   labels=_label_names(meta.get("labels"), training), training=training,
                   test=test)


def _label_names(labels, training: list[Case]) -> list[str]:
    """Names by value from dataset.json (MSD's {"0": name} or nnU-Net v2's {name: 0}); without
    them, "background" and "label N" up to the largest value in the first masks."""
    if isinstance(labels, dict) and labels:
        by_value = {}
        for k, v in labels.items():
            value, name = (k, v) if str(k).isdigit() else (v, k)
            if not isinstance(value, (int, str)) or not str(value).isdigit():
                raise InputError(f"dataset.json: label {k!r}: {v!r} is not one integer value "
                                 "(region labels are not supported)")
            by_value[int(value)] = str(name)
        if sorted(by_value) != list(range(len(by_value))):
            raise InputError(f"dataset.json: label values {sorted(by_value)} are not 0..N")
        return [by_value[i] for i in range(len(by_value))]
    top = max(int(read_truth(c.label).max()) for c in training[:20])
    return ["background"] + [f"label {i}" for i in range(1, max(top, 1) + 1)]


def _pairs_msd(images: Path, labels: Path, required: bool = True) -> list[Case]:
    out = []
    kinds = sgio.NIFTI_SUFFIXES + sgio.RASTER_SUFFIXES
    for image in sorted(p for p in images.iterdir() if sgio.suffix(p) in kinds):
        if image.name.startswith("."):
            continue  # macOS resource forks, which MSD archives carry
        ext = sgio.suffix(image)
        name = image.name[:-len(ext)]
        label = _label_file(labels, name, ext)
        # nnU-Net names one file per channel, NAME_0000 first, and the label NAME; files of
        # further channels have no label of their own and are passed over.
        if label is None and name.endswith("_0000"):
            name = name[:-5]
            label = _label_file(labels, name, ext)
        if label is not None:
            out.append(Case(name, image, label))
    if not out and required:
        raise InputError(f"{images}: no image with a label file in {labels}")
    return out


def _further_channel(image: Path) -> bool:
    """Whether an image is nnU-Net's second (third...) channel file of a case: NAME_0001
    with no label of its own, where NAME has one."""
    ext = sgio.suffix(image)
    m = re.fullmatch(r"(.*)_(\d{4})", image.name[:-len(ext)] if ext else image.name)
    labels = image.parent.parent / "labelsTr"
    return bool(m and m[2] != "0000" and not _label_file(labels, m[0], ext)
                and _label_file(labels, m[1], ext))


def _label_file(labels: Path, name: str, ext: str) -> Path | None:
    # 2D labels are PNG where the images are JPEG (lossy labels are no labels).
    for candidate in (name + ext, name + ".png"):
        if (labels / candidate).is_file():
            return labels / candidate
    return None


def _pairs_2d(images: Path, masks: Path) -> list[Case]:
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in _MASK_SUFFIXES}
    out = []
    for image in sorted(p for p in images.iterdir() if sgio.suffix(p) in sgio.RASTER_SUFFIXES):
        found = by_stem.get(image.stem) or [
            p for s, p in sorted(by_stem.items()) if s.startswith(image.stem + "_")]
        if isinstance(found, list):
            found = found[0] if len(found) == 1 else None
        if found is not None:
            out.append(Case(image.stem, image, found))
    if not out:
        raise InputError(f"{images}: no image with a mask in {masks}")
    return out


def read_truth(path: Path, n_classes: int | None = None) -> np.ndarray:
    """A label file as integer labels (a 0/255 mask as 0/1), checked against ``n_classes``."""
    if sgio.suffix(path) in sgio.NIFTI_SUFFIXES:
        import nibabel as nib
        truth = np.asarray(nib.load(path).dataobj)
    else:
        from PIL import Image
        with Image.open(path) as im:
            truth = np.asarray(im.convert("L") if im.mode not in ("L", "P", "I") else im)
        if truth.max() == 255 and set(np.unique(truth).tolist()) <= {0, 255}:
            truth = truth // 255
    truth = np.rint(truth).astype(np.int64)
    if n_classes is not None and (truth.min() < 0 or truth.max() >= n_classes):
        raise InputError(f"{path}: label values {truth.min()}..{truth.max()}, where the model "
                         f"has {n_classes} labels")
    return truth


def _channels_first(loaded: sgio.Loaded) -> np.ndarray:
    array = loaded.array
    return array[None] if array.ndim == 2 or loaded.kind == "3d" else np.moveaxis(array, -1, 0)


def read_image(path: Path) -> np.ndarray:
    """A case's image alone, channels first, as stored (``read_case`` without labels or
    orientation)."""
    return _channels_first(sgio.read(path))


def read_case(case: Case, codes: str | None = None):
    """(channels-first image, labels, voxel sizes or None) of a case, read as ``encode_file``
    reads the image, in the orientation ``codes`` (e.g. "RAS") where it has an affine.
    Labels must have the image's shape."""
    loaded = sgio.read(case.image)
    image = _channels_first(loaded)
    truth = read_truth(case.label).astype(np.uint8)
    if truth.shape != image.shape[1:]:
        raise InputError(f"{case.label}: shape {truth.shape}, where its image is "
                         f"{image.shape[1:]}")
    ornt = orientation.transform(loaded.affine, codes) if image.ndim == 4 else None
    image = orientation.to_model(image, ornt)
    truth = orientation.to_model(truth[None], ornt)[0]
    return image, truth, orientation.model_spacing(loaded.affine, ornt)

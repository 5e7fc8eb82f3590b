"""Score a model on a labelled data set: per-case Dice, IoU, bytes and bpp, and a summary.

    segcodec evaluate MODEL --data DIR [-o OUT]
    segcodec.evaluate.run("hippocampus-v3", "Task04_Hippocampus", "eval/")

DIR is a Medical Segmentation Decathlon / nnU-Net raw folder (``dataset.json``, ``imagesTs/``
+ ``labelsTs/`` where the test labels are there, else ``imagesTr/`` + ``labelsTr/``; nnU-Net's
``_0000`` channel suffix is understood), or a 2D folder of ``images/`` and ``masks/`` (a mask
is named as its image, or as its image plus ``_`` and a word, as ISIC's ``_segmentation``;
masks of 0 and 255 mean background and label 1). Each image is coded and segmented through
the public API, as a user's file would be, so rates are whole-file bytes x 8 / input pixels.
OUT gets ``cases.csv`` (one row per case) and ``summary.json`` (means over the cases that
coded; nnU-Net's evaluation writes the same pair).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from . import api, metrics, zoo
from . import io as sgio
from .errors import InputError, SgcError

_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def cases(root: Path) -> list[tuple[str, Path, Path]]:
    """(case name, image file, label file) of a data set folder; InputError if it is none."""
    root = Path(root)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return _pairs_2d(root / "images", root / "masks")
    for images, labels in (("imagesTs", "labelsTs"), ("imagesTr", "labelsTr")):
        if (root / images).is_dir() and (root / labels).is_dir():
            return _pairs_msd(root / images, root / labels)
    raise InputError(f"{root}: no data set here: expected imagesTr/ + labelsTr/ (an MSD or "
                     "nnU-Net folder) or images/ + masks/")


def _pairs_msd(images: Path, labels: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for image in sorted(p for p in images.iterdir() if sgio.suffix(p) in sgio.NIFTI_SUFFIXES):
        if image.name.startswith("."):
            continue  # macOS resource forks, which MSD archives carry
        ext = sgio.suffix(image)
        name = image.name[:-len(ext)]
        # nnU-Net names one file per channel, NAME_0000 first, and the label NAME.
        if not (labels / (name + ext)).is_file() and name.endswith("_0000"):
            name = name[:-5]
        if (labels / (name + ext)).is_file():
            out.append((name, image, labels / (name + ext)))
    if not out:
        raise InputError(f"{images}: no image with a label file in {labels}")
    return out


def _pairs_2d(images: Path, masks: Path) -> list[tuple[str, Path, Path]]:
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in _MASK_SUFFIXES}
    out = []
    for image in sorted(p for p in images.iterdir() if sgio.suffix(p) in sgio.RASTER_SUFFIXES):
        found = by_stem.get(image.stem) or [
            p for s, p in sorted(by_stem.items()) if s.startswith(image.stem + "_")]
        if isinstance(found, list):
            found = found[0] if len(found) == 1 else None
        if found is not None:
            out.append((image.stem, image, found))
    if not out:
        raise InputError(f"{images}: no image with a mask in {masks}")
    return out


def read_truth(path: Path, n_classes: int) -> np.ndarray:
    """A label file as integer labels (a 0/255 mask as 0/1)."""
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
    if truth.min() < 0 or truth.max() >= n_classes:
        raise InputError(f"{path}: label values {truth.min()}..{truth.max()}, where the model "
                         f"has {n_classes} labels")
    return truth


def score_case(model: zoo.Model, image: Path, label: Path, *, force: bool = False,
               device: str = "auto") -> dict:
    """One case's bytes, bpp, and Dice and IoU per foreground label."""
    data = api.encode(image, model=model, force=force)
    labels = api.segment(data, device=device)
    truth = read_truth(label, len(model.labels))
    if labels.shape != truth.shape:
        raise InputError(f"{label}: shape {truth.shape}, where the image's labels are "
                         f"{labels.shape}")
    s = metrics.scores(labels, truth, len(model.labels))
    return {"bytes": len(data), "bpp": len(data) * 8 / truth.size,
            **{f"dice {n}": d for n, d in zip(model.labels[1:], s["dice"])},
            **{f"iou {n}": v for n, v in zip(model.labels[1:], s["iou"])}}


def run(model, data, out, *, force: bool = False, device: str = "auto", progress=None) -> dict:
    """Score ``model`` (a name, id or ``zoo.Model``) on the data set folder ``data``; write
    ``cases.csv`` and ``summary.json`` into the folder ``out``; return the summary.

    A case that cannot be coded (outside the model's domain without ``force``, a shape
    mismatch) gets its error in its row and stays out of the means."""
    m = model if isinstance(model, zoo.Model) else zoo.find(str(model))
    out = Path(out)
    found = cases(Path(data))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, image, label) in enumerate(found):
        try:
            rows.append({"case": name, **score_case(m, image, label, force=force,
                                                    device=device), "error": ""})
        except SgcError as exc:
            rows.append({"case": name, "error": str(exc)})
        if progress:
            progress(i + 1, len(found))
    columns = ["case", "bytes", "bpp"] + [f"{k} {n}" for k in ("dice", "iou")
                                          for n in m.labels[1:]] + ["error"]
    coded = [r for r in rows if not r["error"]]
    summary = {"model": m.name, "model_id": m.model_id.hex(), "data": str(data),
               "cases": len(rows), "coded": len(coded), "failed": len(rows) - len(coded),
               "mean": {c: round(float(np.mean([r[c] for r in coded])), 6)
                        for c in columns[1:-1]} if coded else {}}
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    sgio.atomic_write(out / "cases.csv", lambda tmp: Path(tmp).write_text(text.getvalue()))
    sgio.atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(
        json.dumps(summary, indent=1) + "\n"))
    return summary

"""Training sets: a data set folder (``segcodec.datasets``), or ../shared/data's ISIC 2017 and
MSD Task04 hippocampus in their own layout.

Each loader returns images already normalised and resampled to the model's working grid
(the same functions ``segcodec.encode`` uses) and soft one-hot targets on that grid, plus the
full-resolution labels for evaluation at the input's size.  Images are read as
``segcodec.encode_file`` reads them, in the model's orientation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import datasets
from ..transforms import photo_intensities, working_grid
from . import carve
from .recipes import Recipe

SPLIT_FILE = Path(__file__).with_name("hippocampus_split.json")
FOLDERS = {"isic": "isic2017", "hippocampus": "msd_hippocampus"}  # under --data


def _legacy(root: Path, task_key: str) -> bool:
    return task_key in FOLDERS and (root / FOLDERS[task_key]).is_dir()


def check_root(root: Path, task_key: str) -> None:
    """ValueError unless ``root`` holds the task's data set: a data set folder, or for
    ``isic`` and ``hippocampus`` a folder holding ../shared/data's."""
    if not _legacy(root, task_key) and not datasets.is_dataset(root):
        where = f"{FOLDERS[task_key]}/ or " if task_key in FOLDERS else ""
        raise ValueError(f"{root}: no {where}imagesTr/ + labelsTr/ or images/ + masks/ inside")


def isic_files(root: Path, split: str) -> list[tuple[Path, Path]]:
    base = root / FOLDERS["isic"] / split
    return [(p, base / "masks" / f"{p.stem}_segmentation.png")
            for p in sorted((base / "images").glob("ISIC_*.jpg"))]


def hippocampus_split(root: Path, n_test: int = 40, seed: int = 2020) -> dict:
    """The fixed train/test split, written once into the repo and read from there after."""
    if SPLIT_FILE.exists():
        return json.loads(SPLIT_FILE.read_text())
    names = sorted(p.name for p in (root / FOLDERS["hippocampus"] / "imagesTr").glob("*.nii.gz"))
    order = np.random.default_rng(seed).permutation(len(names))
    split = {"seed": seed, "test": sorted(names[i] for i in order[:n_test]),
             "train": sorted(names[i] for i in order[n_test:])}
    SPLIT_FILE.write_text(json.dumps(split, indent=1) + "\n")
    return split


def hippocampus_files(root: Path, split: str) -> list[tuple[Path, Path]]:
    names = hippocampus_split(root)[split]
    base = root / FOLDERS["hippocampus"]
    return [(base / "imagesTr" / n, base / "labelsTr" / n) for n in names]


def read_pair(image_path: Path, label_path: Path, codes: str | None = None,
              channels: int | None = None):
    """(channels-first image, integer labels) of a case, in the orientation ``codes``; a grey
    image for a ``channels=3`` task repeated to RGB, as ``encode`` does."""
    image, labels, _ = datasets.read_case(datasets.Case("", Path(image_path), Path(label_path)),
                                          codes)
    if channels == 3 and image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    elif channels is not None and image.shape[0] != channels:
        raise ValueError(f"{image_path}: {image.shape[0]} channels, where the task has "
                         f"{channels}")
    return image, labels


def soft_targets(labels: np.ndarray, n_classes: int, work_shape) -> torch.Tensor:
    """Integer labels -> class fractions on the working grid (area averaging)."""
    onehot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), n_classes)
    onehot = onehot.movedim(-1, 0)[None].float()
    return F.adaptive_avg_pool2d(onehot, work_shape) if labels.ndim == 2 \
        else F.adaptive_avg_pool3d(onehot, work_shape)


def load_set(pairs, normalisation: dict, n_classes: int, work_shape, codes: str | None = None,
             channels: int | None = None):
    """All pairs -> (X (N,C,*work), T (N,n_classes,*work), full-size label list)."""
    xs, ts, full = [], [], []
    for image_path, label_path in pairs:
        image, labels = read_pair(image_path, label_path, codes, channels)
        if normalisation["kind"] == "fixed":  # photographs, on encode's 0..255 scale
            image = photo_intensities(image)
        if labels.max() >= n_classes:
            raise ValueError(f"{label_path}: label {labels.max()}, where the task has "
                             f"{n_classes} labels")
        xs.append(working_grid(image, normalisation, work_shape)[0])
        ts.append(soft_targets(labels, n_classes, work_shape)[0])
        full.append(labels)
    return torch.stack(xs), torch.stack(ts), full


def channel_stats(pairs, limit: int = 400, channels: int | None = None):
    """Per-channel mean and std of photographs on the 0..1 scale: two lists."""
    images = [photo_intensities(read_pair(p, q, channels=channels)[0]) for p, q in pairs[:limit]]
    acc = np.concatenate([im.reshape(im.shape[0], -1) / 255.0 for im in images], 1)
    return [round(float(v), 4) for v in acc.mean(1)], [round(float(v), 4) for v in acc.std(1)]


VALIDATION_CASES = {"isic": 150, "hippocampus": 20}
VALIDATION_SEED = 7


def validation_cases(task_key: str, n_train: int) -> int:
    """How many training cases are held out: the shipped tasks' numbers, else a tenth
    (1 to 150)."""
    n = VALIDATION_CASES.get(task_key) or min(150, max(1, round(n_train / 10)))
    return min(n, n_train // 2)


SPLITS_FILE = "splits_final.json"  # nnU-Net's: a list of folds, {"train": [...], "val": [...]}


def given_validation(root: Path, cases: list) -> set[int] | None:
    """The validation cases (indices into ``cases``, ``datasets.Case``) that ``root``'s
    splits_final.json gives as fold 0's "val": case names as nnU-Net writes them
    (patient001_frame01), or image file names as split.json lists them; None without the
    file.  Every other training case trains (fold 0's "train" is not read)."""
    path = root / SPLITS_FILE
    if not path.is_file():
        return None
    try:
        val = json.loads(path.read_text())[0]["val"]
        if not isinstance(val, list) or not all(isinstance(name, str) for name in val):
            raise TypeError('"val" is not a list of case names')
        val = set(val)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: not nnU-Net's splits (a list of {{\"train\": [...], "
                         f"\"val\": [...]}}): {exc}") from None
    names = [{case.name, Path(case.image).name} for case in cases]
    if unknown := sorted(val - set().union(*names)):
        raise ValueError(f"{path}: fold 0 validates on {', '.join(unknown[:3])}"
                         f"{' ...' if len(unknown) > 3 else ''}, not training cases here")
    held = {i for i, case_names in enumerate(names) if case_names & val}
    if not held or len(held) == len(cases):
        raise ValueError(f"{path}: fold 0 leaves {'no' if not held else 'every'} training case "
                         "for validation")
    return held


def task_pairs(task_key: str, root: Path, split: str) -> list[tuple[Path, Path]]:
    """The cases of ``split``:

    - "train": every training case; "test": the reported test set (a data set folder's
      imagesTs/ + labelsTs/; ISIC's official val set, as in the paper; the hippocampus split
      in the repo);
    - "fit" and "val": "train" carved in two by a seeded draw of ``validation_cases``: for a
      data set folder, of whole groups of look-alike cases (``carve``), unless its
      splits_final.json names them (``given_validation``); for the shipped tasks, of
      cases, as their models were picked.  Models, epochs and rate points are
      chosen on "val", never on "test".
    """
    given = None
    if _legacy(root, task_key):
        if split == "test":
            return isic_files(root, "val") if task_key == "isic" \
                else hippocampus_files(root, "test")
        pairs = isic_files(root, "train") if task_key == "isic" \
            else hippocampus_files(root, "train")
    else:
        ds = datasets.open(root)
        pairs = [(c.image, c.label) for c in (ds.test if split == "test" else ds.training)]
        if split == "test":
            return pairs
        if split != "train":
            given = given_validation(root, ds.training)
    if split == "train":
        return pairs
    if split not in ("fit", "val"):
        raise ValueError(f"unknown split {split!r}")
    n_val = validation_cases(task_key, len(pairs))
    if given is not None:
        held = given
    elif task_key in VALIDATION_CASES:
        held = set(np.random.default_rng(VALIDATION_SEED).permutation(len(pairs))[:n_val].tolist())
    else:
        held = carve.validation_indices(tuple((Path(a).resolve(), Path(b).resolve())
                                              for a, b in pairs), n_val, VALIDATION_SEED)
    return [p for i, p in enumerate(pairs) if (i in held) == (split == "val")]


def normalisation_for(cfg: Recipe, root: Path) -> dict:
    """The config's normalisation, or for photographs one fixed from training statistics."""
    norm = cfg.normalisation
    if norm and (norm["kind"] != "fixed" or "mean" in norm):
        return norm
    mean, std = channel_stats(task_pairs(cfg.task_key, root, "train"),
                              channels=cfg.arch["in_channels"])
    return {"kind": "fixed", "scale": 1 / 255, "mean": mean, "std": std}


def cached_set(cfg: Recipe, root: Path, split: str, cache: Path | None):
    """``load_set`` for a config's task and working grid, kept in ``cache`` between runs."""
    norm, codes, arch = cfg.normalisation, cfg.orientation, cfg.arch
    pairs = task_pairs(cfg.task_key, root, split)
    key = [cfg.task_key, split, norm, arch["work_shape"], "tensors"]
    if not _legacy(root, cfg.task_key):  # any folder may hold a data set of any name
        names = "\n".join(os.path.relpath(image, root) for image, _ in pairs)
        key += [str(root.resolve()), codes, hashlib.sha256(names.encode()).hexdigest()]
    key = json.dumps(key, sort_keys=True)
    path = cache / f"{cfg.task_key}-{split}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt" \
        if cache else None
    if path and path.exists():  # tensors only: a planted cache file cannot run code
        from .loop import read_checkpoint
        x, t, full = read_checkpoint(path)
        return x, t, [labels.numpy() for labels in full]
    x, t, full = load_set(pairs, norm, arch["n_classes"],
                          tuple(arch["work_shape"]), codes, arch["in_channels"])
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((x, t, [torch.from_numpy(labels) for labels in full]), path)
    return x, t, full

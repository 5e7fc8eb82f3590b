"""../shared/data's data sets as data set folders in the MSD / nnU-Net raw layout.

    python -m segcodec.train.convert ../shared/data datasets/
    segcodec train --data datasets/hippocampus --design seg

writes ``OUT/isic`` (ISIC 2017: training set -> imagesTr/labelsTr, the official validation
set, the paper's test set -> imagesTs/labelsTs) and ``OUT/hippocampus`` (MSD Task04: the
repo's train/test split, ``segcodec/train/hippocampus_split.json``), each with a
``dataset.json``.  Files are linked, not copied, unless ``copy=True``.  The named recipes
(``isic-d4``, ``hippocampus-seg``...) read these folders to the same cases, in the same order
and split, as ../shared/data itself.

The two "your own data" sets get held-out test cases of their own, which neither source
gives: ``OUT/cvc`` (CVC-ClinicDB) holds out its last ``CVC_TEST`` frames, the end of its
frame order, so held-out frames share a video with training ones at most at the boundary (a
random split would put a frame's neighbours in training); ``OUT/acdc`` holds out every fourth
of its 30 patients by number (7), both of their frames.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from . import data, recipes


def _place(source: Path, target: Path, copy: bool) -> None:
    if not source.is_file():
        raise ValueError(f"{source}: missing")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if copy:
        shutil.copy2(source, target)
    else:
        os.symlink(source.resolve(), target)


def _write(out: Path, meta: dict, splits: dict, copy: bool, rename=None) -> None:
    """``splits`` ("Tr", "Ts": (image, labels) pairs) and ``meta`` as a data set folder;
    ``rename`` gives an image's name there (default: its own)."""
    for suffix, pairs in splits.items():
        for image, label in pairs:
            name = rename(image) if rename else image.name
            _place(image, out / f"images{suffix}" / name, copy)
            case = name.split(".")[0].removesuffix("_0000")  # nnU-Net: a case's first channel
            _place(label, out / f"labels{suffix}" / (case + "".join(label.suffixes)), copy)
    meta = {**meta, "numTraining": len(splits["Tr"]), "numTest": len(splits["Ts"])}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")


CVC_TEST = 120  # of 612 frames


def _own_data(shared: Path, out: Path, copy: bool) -> list[str]:
    """CVC-ClinicDB and ACDC, where ``shared`` has them, with held-out test cases."""
    written = []
    cvc = shared / "cvc_clinicdb"
    if (cvc / "images").is_dir():
        frames = sorted((cvc / "images").glob("*.jpg"), key=lambda p: int(p.stem))
        pairs = [(image, cvc / "masks" / f"{image.stem}.png") for image in frames]
        cut = max(0, len(pairs) - CVC_TEST)
        meta = {"name": "cvc", "description": "CVC-ClinicDB polyp segmentation (colonoscopy)",
                "channel_names": {"0": "R", "1": "G", "2": "B"},
                "labels": {"background": 0, "polyp": 1}, "file_ending": ".jpg"}
        _write(out / "cvc", meta, {"Tr": pairs[:cut], "Ts": pairs[cut:]}, copy,
               rename=lambda image: f"cvc_{int(image.stem):03d}.jpg")
        written.append("cvc")
    acdc = shared / "acdc"
    if (acdc / "imagesTr").is_dir():
        images = sorted((acdc / "imagesTr").glob("*_0000.nii.gz"))
        held = set(sorted({p.name.split("_")[0] for p in images})[3::4])
        splits = {"Tr": [], "Ts": []}
        for image in images:
            label = acdc / "labelsTr" / image.name.replace("_0000", "")
            splits["Ts" if image.name.split("_")[0] in held else "Tr"].append((image, label))
        meta = {**json.loads((acdc / "dataset.json").read_text()), "name": "acdc"}
        _write(out / "acdc", meta, splits, copy)
        written.append("acdc")
    return written


def convert(shared: Path, out: Path, copy: bool = False) -> list[str]:
    """Write the data sets found in ``shared`` under ``out``; returns their names."""
    shared, out = Path(shared), Path(out)
    written = _own_data(shared, out, copy)
    for task in ("isic", "hippocampus"):
        if not (shared / data.FOLDERS[task]).is_dir():
            continue
        labels = recipes.TASKS[task]["labels"]
        meta = {"name": task, "description": recipes.TASKS[task]["task"],
                "labels": {name: i for i, name in enumerate(labels)}}
        if task == "isic":
            meta.update(channel_names={"0": "R", "1": "G", "2": "B"}, file_ending=".jpg")
        else:
            meta.update(channel_names={"0": "MRI"}, file_ending=".nii.gz")
        _write(out / task, meta, {"Tr": data.task_pairs(task, shared, "train"),
                                  "Ts": data.task_pairs(task, shared, "test")}, copy)
        written.append(task)
    if not written:
        raise ValueError(f"{shared}: none of {data.FOLDERS['isic']}/, "
                         f"{data.FOLDERS['hippocampus']}/, cvc_clinicdb/, acdc/ inside")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segcodec.train.convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("shared", type=Path, help="the folder holding isic2017/, "
                        "msd_hippocampus/, cvc_clinicdb/, acdc/")
    parser.add_argument("out", type=Path)
    parser.add_argument("--copy", action="store_true", help="copy the files instead of linking")
    args = parser.parse_args(argv)
    try:
        for task in convert(args.shared, args.out, args.copy):
            print(args.out / task)
    except (ValueError, OSError) as exc:
        print(f"segcodec: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

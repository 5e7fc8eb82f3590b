"""../shared/data's two data sets as data set folders in the MSD / nnU-Net raw layout.

    python -m segcodec.train.convert ../shared/data datasets/
    segcodec train --data datasets/hippocampus --design seg

writes ``OUT/isic`` (ISIC 2017: training set -> imagesTr/labelsTr, the official validation
set, the paper's test set -> imagesTs/labelsTs) and ``OUT/hippocampus`` (MSD Task04: the
repo's train/test split, ``segcodec/train/hippocampus_split.json``), each with a
``dataset.json``.  Files are linked, not copied, unless ``copy=True``.  The named recipes
(``isic-d4``, ``hippocampus-seg``...) read these folders to the same cases, in the same order
and split, as ../shared/data itself.
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


def _write(out: Path, meta: dict, splits: dict, copy: bool) -> None:
    for suffix, pairs in splits.items():
        for image, label in pairs:
            _place(image, out / f"images{suffix}" / image.name, copy)
            stem = image.name.split(".")[0]
            _place(label, out / f"labels{suffix}" / (stem + "".join(label.suffixes)), copy)
    meta = {**meta, "numTraining": len(splits["Tr"]), "numTest": len(splits["Ts"])}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")


def convert(shared: Path, out: Path, copy: bool = False) -> list[str]:
    """Write the data sets found in ``shared`` under ``out``; returns their names."""
    shared, out = Path(shared), Path(out)
    written = []
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
        raise ValueError(f"{shared}: neither {data.FOLDERS['isic']}/ nor "
                         f"{data.FOLDERS['hippocampus']}/ inside")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segcodec.train.convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("shared", type=Path, help="the folder holding isic2017/, msd_hippocampus/")
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

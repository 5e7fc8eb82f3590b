"""The uncompressed reference segmentors that segment what JPEG-2000 and H.264 decode.

    python -m bench references [--runs runs]      # runs/<task>-seg -> bench/references/

Each is the ``<task>-seg`` recipe's network at its validation pick, shipped in this folder
as ``<task>-seg.safetensors`` (tensors only: loading one runs no code) with its training
config in the file's metadata, so the bench reproduces every peer row from a fresh clone.
A missing reference is an error: an untrained network would give Dice that means nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from segcodec.train import loop
from segcodec.train.recipes import Recipe

from .common import NDIM, REPO, RUNS, Segmentor, checkpoint

FOLDER = REPO / "bench" / "references"


def path_for(task: str, folder: Path = FOLDER) -> Path:
    return folder / f"{task}-seg.safetensors"


def save(run_checkpoint: Path, path: Path) -> dict:
    """The run's validation-picked network -> ``path``; returns the metadata written."""
    net, cfg = loop.load_checkpoint(run_checkpoint, best=True)
    picked = torch.load(run_checkpoint, map_location="cpu", weights_only=True).get("best") or {}
    meta = {"config": json.dumps(cfg.resolve(), sort_keys=True), "recipe": cfg.name,
            "picked_step": str(picked.get("step", "last"))}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), meta)
    return meta


def load(task: str, folder: Path = FOLDER) -> Segmentor:
    """The shipped reference of ``task``; FileNotFoundError, naming the fix, if missing."""
    path = path_for(task, folder)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no reference segmentor for {task}; train {task}-seg and run "
            "`python -m bench references` (the bench never segments with an untrained network)")
    with safe_open(str(path), "pt") as f:
        cfg = Recipe.load(json.loads(f.metadata()["config"]))
    net = loop.build_net(cfg)
    net.load_state_dict(load_file(str(path)))
    return Segmentor(net.eval(), cfg, "seg")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench references", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=RUNS, help="where <task>-seg/ runs live")
    ap.add_argument("--out", type=Path, default=FOLDER)
    args = ap.parse_args(argv)
    for task in NDIM:
        source = checkpoint(args.runs, task, "seg")
        if not source.exists():
            print(f"note: {source} missing; {task} reference left as it is", file=sys.stderr)
            continue
        save(source, path_for(task, args.out))
        print(f"{task}: {path_for(task, args.out)}")

"""Choose among trained runs on the validation split carved from the training cases.

    python -m bench validation --data ../shared/data RUN_DIR [RUN_DIR ...] [--out bench/results]

Each run's validation-picked weights are exported as ``segcodec export`` does (entropy tables
fitted on the training latents) into a scratch model folder, and every validation case is
encoded and segmented through the public API: whole-file bits per input pixel and Dice, the
numbers models and rate points are chosen on. The reported test sets (ISIC val, the
hippocampus test split) are never read. Rows of runs measured before are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .common import RESULTS, command, machine, mean_dice, write_outputs

COLUMNS = ("run", "hardware", "batch", "augment", "rate_weight", "steps", "picked_step",
           "val_bpp", "val_dice")


def measure(run: Path, root: Path, models: Path, cache: Path | None) -> dict:
    """The row of one run: its config and its exported model on the validation cases."""
    import segcodec
    from segcodec import zoo
    from segcodec.train import data as training_data
    from segcodec.train import export

    from segcodec.train.recipes import Recipe

    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = Recipe.load(ck["config"])
    task = cfg.task_key
    name = f"validation-{run.name}"
    for old in models.glob(f"{name}-*.sgm"):
        old.unlink()
    export.export(run / "checkpoint.pt", root, name, models, False, cache)
    zoo.reload()
    model = zoo.find(name)
    bpp, dice = [], []
    for image_path, label_path in training_data.task_pairs(task, root, "val"):
        image, truth = training_data.read_pair(image_path, label_path)
        # force: these are the task's own cases; the domain a model derives from its training
        # cases guards users' inputs, not held-out cases of its task.
        if cfg.arch["ndim"] == 2:
            data = segcodec.encode(np.moveaxis(image, 0, -1), model=model, force=True)
        else:  # from the file, with its geometry, as `segcodec encode in.nii.gz` does
            data = segcodec.encode(image_path, model=model, force=True)
        bpp.append(len(data) * 8 / truth.size)
        dice.append(mean_dice(segcodec.segment(data), truth, task))
    return {"task": task, "run": run.name, "hardware": ck.get("hardware", "CPU"),
            "batch": cfg.batch, "augment": cfg.augment,
            "rate_weight": cfg.rate_weight, "steps": cfg.steps,
            "picked_step": (ck.get("best") or {}).get("step", ck["step"]),
            "cases": len(bpp), "val_bpp": round(float(np.mean(bpp)), 5),
            "val_dice": round(float(np.mean(dice)), 4)}


def markdown(result: dict) -> str:
    lines = ["# Runs on the validation split", ""]
    lines += [f"`{c}`" for c in result["commands"]]
    lines += ["", "Validation cases carved from the training cases (the tests are never read); "
              "rates are whole-file bytes x 8 / input pixels.", ""]
    for task in sorted({r["task"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["task"] == task), key=lambda r: r["run"])
        lines += [f"## {task}", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(f"{r[c]:g}" if isinstance(r[c], float) else str(r[c])
                                    for c in COLUMNS) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench validation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="run folders holding checkpoint.pt")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "segcodec")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    missing = [str(r) for r in args.runs if not (r / "checkpoint.pt").is_file()]
    if missing:
        sys.exit(f"bench validation: error: no checkpoint.pt in {', '.join(missing)}")
    scratch = Path(tempfile.mkdtemp(prefix="segcodec-validation-"))
    os.environ["SEGCODEC_MODEL_PATH"] = str(scratch)  # the exported candidates, nowhere else
    rows = []
    for run in args.runs:
        rows.append(measure(run, args.data, scratch, args.cache))
        print(json.dumps(rows[-1]), flush=True)
    commands = [command("validation", argv)]
    previous = args.out / "validation.json"
    if previous.exists():  # earlier calls' rows stay, and the commands that measured them
        old = json.loads(previous.read_text())
        measured = {(r["task"], r["run"]) for r in rows}
        rows = [r for r in old["rows"] if (r["task"], r["run"]) not in measured] + rows
        commands = old.get("commands", []) + commands
    result = {"commands": commands, "machine": machine(args.threads), "rows": rows}
    write_outputs(args.out, "validation", result, markdown(result))
    return result

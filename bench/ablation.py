"""The paper's Fig. 3(a) as a table: D1-D4 and the references, from rate.json and the runs.

    python -m bench ablation [--rate bench/results/rate.json] [--runs runs] [--out bench/results]

Reads the measured rows of ``python -m bench rate`` (whole-file bpp, Dice, IoU on the test
sets) and each run's summary.json (steps, training time), so it measures nothing itself.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from segcodec import zoo

from .common import RESULTS, RUNS, command, write_outputs

DESIGNS = [  # (recipe suffix, what it is, how rate.json names its row)
    ("seg", "s alone, uncompressed", ("uncompressed", "raw", "seg")),
    ("d1", "D1: s + D, uncompressed", ("uncompressed", "raw", "d1")),
    ("d2", "D2: C + g + s", ("segcodec", "{task}-d2", None)),
    ("d3", "D3: C + g + s + D", ("segcodec", "{task}-d3", None)),
    ("d4", "D4: C + g + s + D + rate loss", ("segcodec", "{task}-d4", None)),
    ("d4-r0", "D4 fine-tuned, rate weight / 3", ("segcodec", "{task}-d4-r0", None)),
    ("d4-r2", "D4 fine-tuned, rate weight x 3", ("segcodec", "{task}-d4-r2", None)),
    ("d4-r3", "D4 fine-tuned, rate weight x 9", ("segcodec", "{task}-d4-r3", None)),
    ("autoseg", "Auto/Seg: autoencoder (pixel MSE) + s", ("autoseg", "{task}-autoseg", "seg")),
]


def shipped() -> dict[str, zoo.Model]:
    """Recipe -> the installed model exported from it (the newest, where several were)."""
    return {m.manifest.training.get("recipe"): m
            for m in sorted(zoo.installed().values(), key=lambda m: m.name)}


def table(rate: dict, runs: Path) -> list[dict]:
    ships = shipped()
    out = []
    for task in rate["tasks"]:
        rows = {(r["codec"], str(r["setting"]), r["segmentor"]): r
                for r in rate["rows"] if r["task"] == task}
        for suffix, what, (codec, setting, segmentor) in DESIGNS:
            model = ships.get(f"{task}-{suffix}")
            row = rows.get((codec, setting.format(task=task), segmentor)) or \
                rows.get((codec, model and model.name, segmentor))  # named by model
            summary_path = runs / f"{task}-{suffix}" / "summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            if row is None and not summary:
                continue
            if model is not None and row is not None:  # its own training, not a later run
                trained = model.manifest.training
                summary = {"steps": trained.get("steps"),
                           "train_seconds": trained.get("train_seconds")}
            out.append({"task": task, "design": suffix, "what": what,
                        "shipped_as": model and model.name,
                        "mean_bpp": row and row["mean_bpp"], "dice": row and row["dice"],
                        "mean_dice": row and row["mean_dice"], "iou": row and row["iou"],
                        "mean_iou": row and row["mean_iou"], "steps": summary.get("steps"),
                        "train_minutes": summary.get("train_seconds") and
                        round(summary["train_seconds"] / 60, 1)})
    return out


def markdown(rows: list[dict], cmd: str) -> str:
    lines = [f"# Ablation (Liu et al. Fig. 3a)\n\n`{cmd}`; rates are whole-file bytes x 8 / "
             "input pixels; training on 2 CPU cores, one thread per run, two runs side by side."]
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += [f"\n## {task}\n", "| design | bpp | Dice | IoU | steps | training |",
                  "|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["task"] == task):
            def per_class(d):
                if d is None:
                    return "not measured"
                return " / ".join(f"{v:.3f}" for v in d.values()) + \
                    (f" (mean {sum(d.values()) / len(d):.3f})" if len(d) > 1 else "")
            bpp = "uncompressed" if r["design"] in ("seg", "d1") else \
                ("—" if r["mean_bpp"] is None else f"{r['mean_bpp']:.4f}")
            minutes = "—" if r["train_minutes"] is None else f"{r['train_minutes']} min"
            what = r["what"] + (f" = `{r['shipped_as']}`" if r.get("shipped_as") else "")
            lines.append(f"| {what} | {bpp} | {per_class(r['dice'])} | "
                         f"{per_class(r['iou'])} | {r['steps'] or '—'} | {minutes} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=Path, default=RESULTS / "rate.json")
    ap.add_argument("--runs", type=Path, default=RUNS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not args.rate.exists():
        ap.error(f"{args.rate} not found: run `python -m bench rate --data ...` first")
    rows = table(json.loads(args.rate.read_text()), args.runs)
    cmd = command("ablation", argv)
    write_outputs(args.out, "ablation", {"command": cmd, "rows": rows}, markdown(rows, cmd))

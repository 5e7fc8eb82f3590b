"""Score a model on a labelled data set: per-case Dice, IoU, bytes and bpp, and a summary.

    segcodec evaluate MODEL --data DIR [-o OUT]
    segcodec.evaluate.run("hippocampus-v3", "Task04_Hippocampus", "eval/")

DIR is a data set folder (``segcodec.datasets``: MSD / nnU-Net raw, or ``images/`` +
``masks/``); its test cases are scored where it has labelled ones, else its training cases.
Each image is coded and segmented through
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

from . import api, datasets, metrics, zoo
from . import io as sgio
from .errors import InputError, SgcError

__all__ = ["score_case", "run"]


def score_case(model: zoo.Model, image: Path, label: Path, *, force: bool = False,
               device: str = "auto") -> dict:
    """One case's bytes, bpp, and Dice and IoU per foreground label."""
    data = api.encode(image, model=model, force=force)
    labels = api.segment(data, device=device)
    truth = datasets.read_truth(label, len(model.labels))
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
    found = datasets.cases(Path(data))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, case in enumerate(found):
        try:
            rows.append({"case": case.name, **score_case(m, case.image, case.label,
                                                         force=force, device=device),
                         "error": ""})
        except SgcError as exc:
            rows.append({"case": case.name, "error": str(exc)})
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

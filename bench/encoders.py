"""The clinic's numpy encoder against torch's C, on every test case: latent bits and files
that differ, and the Dice of the labels each gives.

    python -m bench encoders --data ../shared/data [--models isic-lesion-v4 ...]

``segcodec.encode`` computes C in numpy, in float64 (``segcodec.compressor``); the models
were trained, and their golden files written, with torch's float32 C.  A latent whose logit
lies within rounding of 0 may come out either way.  Each case is coded by both (the same
``api.prepare``; torch: ``transforms.working_grid`` and ``net.compressor``, as before), and
where the latents differ both files are segmented and scored against the truth.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

import segcodec
from segcodec import api, bits, transforms, zoo
from segcodec.coder import Coder

from .common import KIND, NDIM, RESULTS, command, machine, mean_dice, task_pairs, \
    write_outputs, Sample

DEFAULTS = {"isic": "isic-lesion-v4", "hippocampus": "hippocampus-v5"}


def torch_latents(p: api.Prepared) -> np.ndarray:
    """C as the models were trained: float32 torch."""
    m = p.model
    x = transforms.working_grid(p.array, m.manifest.normalisation,
                                m.manifest.architecture.work_shape)
    with torch.no_grad():
        return bits.threshold(m.net.compressor(x)[0].numpy())


def _labels(p: api.Prepared, z: np.ndarray) -> np.ndarray:
    data = Coder.of(p.model).write(z, shape=p.shape, channels=p.channels, affine=p.affine)
    return segcodec.segment(data, device="cpu")


def compare(task: str, model: zoo.Model, data: Path | None) -> dict:
    files = bits_total = bits_differ = files_differ = 0
    dice_numpy, dice_torch = [], []
    for pair in task_pairs(task, data):
        s = Sample.read(task, *pair)
        p = api.prepare(s.array, kind=KIND[task], model=model, affine=s.affine, force=True)
        z_numpy, z_torch = api.compress(p), torch_latents(p)
        files += 1
        bits_total += z_numpy.size
        if (n := int((z_numpy != z_torch).sum())):
            bits_differ += n
            files_differ += 1
            dice_numpy.append(mean_dice(_labels(p, z_numpy), s.truth, task))
            dice_torch.append(mean_dice(_labels(p, z_torch), s.truth, task))
    return {"task": task, "model": model.name, "files": files, "bits": bits_total,
            "bits_differ": bits_differ, "files_differ": files_differ,
            "dice_where_differ": {"numpy": dice_numpy, "torch": dice_torch},
            "mean_dice_change": round(statistics.fmean(dice_numpy) - statistics.fmean(dice_torch),
                                      6) if dice_numpy else 0.0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench encoders", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="../shared/data (default: fixtures/)")
    ap.add_argument("--models", nargs="+", help="models to compare (default: the defaults)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    models = [zoo.find(name) for name in (args.models or DEFAULTS.values())]
    rows = [compare(next(t for t, n in NDIM.items() if n == m.ndim), m, args.data)
            for m in models]
    result = {"command": command("encoders", argv), "machine": machine(1), "rows": rows}
    lines = ["# The numpy encoder against torch's C (`python -m bench encoders`)", "",
             f"`{result['command']}`", "",
             "Every test case coded by both from the same prepared input; where the latents "
             "differ, both files are segmented and scored.", "",
             "| model | files | latent bits | bits that differ | files that differ | "
             "Dice change where they differ |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['files']} | {r['bits']} | {r['bits_differ']} | "
                     f"{r['files_differ']} | {r['mean_dice_change']:+.6f} |")
    write_outputs(args.out, "encoders", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

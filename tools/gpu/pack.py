"""Pack the working-grid training and validation sets for a lent GPU machine.

    python tools/gpu/pack.py --data ../shared/data --out .gpu

The data sets do not travel to that machine (only the repository and 64 MiB do), so each
task's fit and validation cases go as one zstd-compressed .npz: ISIC images as 8-bit pixels
of the working grid (the normalisation is affine, so it is redone there), hippocampus
volumes as float16, the soft targets' foreground classes as 8 bits, and the validation
cases' full-size labels. ``train_gpu.load_pack`` reads them back.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import torch
import zstandard

from segcodec.train import data as training_data
from segcodec.train import recipes, run


def pack(task: str, root: Path, cache: Path | None = run.DEFAULT_CACHE) -> bytes:
    cfg = recipes.config(f"{task}-seg")
    cfg = dataclasses.replace(cfg, normalisation=training_data.normalisation_for(cfg, root))
    arrays = {"normalisation": np.array(json.dumps(cfg.normalisation))}
    for split in ("fit", "val"):
        x, t, full = training_data.cached_set(cfg, root, split, cache)
        if task == "isic":
            norm = cfg.normalisation
            mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
            std = torch.tensor(norm["std"]).view(1, 3, 1, 1)
            pixels = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
            arrays[f"{split}_x_u8"] = pixels.numpy()
        else:
            arrays[f"{split}_x_f16"] = x.half().numpy()
        arrays[f"{split}_t_u8"] = (t[:, 1:] * 255).round().to(torch.uint8).numpy()
        if split == "val":
            arrays["val_shapes"] = np.array([labels.shape for labels in full])
            arrays["val_labels"] = np.concatenate([labels.reshape(-1) for labels in full])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return zstandard.ZstdCompressor(level=19).compress(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(".gpu"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for task in recipes.TASKS:
        blob = pack(task, args.data)
        (args.out / f"{task}.npz.zst").write_bytes(blob)
        print(f"{task}: {len(blob) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

"""Pack the working-grid training and validation sets for a lent GPU machine.

    python tools/gpu/pack.py --data ../shared/data --out .gpu

The data sets do not travel to that machine (only the repository and 64 MiB do), so each
task's fit and validation cases go as one zstd-compressed .npz: photographs (a ``fixed``
normalisation, which is affine, so it is redone there) as 8-bit pixels of the working grid,
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


def _per_channel(norm: dict, key: str, ndim: int) -> torch.Tensor:
    return torch.tensor(norm[key], dtype=torch.float32).view(1, -1, *(1,) * ndim)


def pixels(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """Normalised working-grid photographs (N, C, *grid) of a ``fixed`` normalisation
    (``transforms.normalise``) back to their 8-bit pixels, which is how they travel."""
    ndim = x.ndim - 2
    raw = (x * _per_channel(norm, "std", ndim) + _per_channel(norm, "mean", ndim)) / norm["scale"]
    return raw.round().clamp(0, 255).to(torch.uint8)


def normalised(pixels: torch.Tensor, norm: dict) -> torch.Tensor:
    """``pixels``' inverse: 8-bit working-grid photographs normalised as ``normalise`` does."""
    ndim = pixels.ndim - 2
    return ((pixels.float() * norm["scale"] - _per_channel(norm, "mean", ndim))
            / _per_channel(norm, "std", ndim))


def pack(task: str, root: Path, cache: Path | None = run.DEFAULT_CACHE) -> bytes:
    cfg = recipes.config(f"{task}-seg")
    cfg = dataclasses.replace(cfg, normalisation=training_data.normalisation_for(cfg, root))
    arrays = {"normalisation": np.array(json.dumps(cfg.normalisation))}
    for split in ("fit", "val"):
        x, t, full = training_data.cached_set(cfg, root, split, cache)
        if cfg.normalisation["kind"] == "fixed":
            arrays[f"{split}_x_u8"] = pixels(x, cfg.normalisation).numpy()
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

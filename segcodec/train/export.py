"""Checkpoint -> zoo model: weights, integer entropy tables fitted on training latents, manifest.

    python -m segcodec.train.export runs/isic/checkpoint.pt --data ../shared/data \\
        --name isic-lesion-v0 --out segcodec/models
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .. import bits, entropy
from ..networks import SegCodecNet, count_parameters
from ..zoo import write_model_file
from . import data


@torch.no_grad()
def training_latents(net: SegCodecNet, x: torch.Tensor, batch: int = 32):
    for i in range(0, len(x), batch):
        for logits in net.compressor(x[i:i + batch]):
            yield bits.threshold(logits.numpy())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "models")
    ap.add_argument("--default", action="store_true", help="pick this model by input kind")
    args = ap.parse_args(argv)
    ck = torch.load(args.checkpoint, weights_only=False)
    arch = ck["arch"]
    net = SegCodecNet(arch).eval()
    net.load_state_dict(ck["state_dict"])
    pairs = data.isic_files(args.data, "train") if arch["ndim"] == 2 \
        else data.hippocampus_files(args.data, "train")
    x, _, _ = data.load_set(pairs, ck["normalisation"], arch["n_classes"],
                            tuple(arch["work_shape"]))
    latents = list(training_latents(net, x))
    table = entropy.fit_table(latents, arch["ndim"])
    manifest = {
        "name": args.name, "task": ck["task"], "labels": ck["labels"],
        "normalisation": ck["normalisation"], "architecture": arch, "default": args.default,
        "training": {"recipe": "segcodec.train.provisional", "steps": ck["step"],
                     "seed": ck["seed"], "train_seconds": round(ck["elapsed"]),
                     "train_cases": len(pairs)},
        "parameters": {"C": count_parameters(net.compressor),
                       "g": count_parameters(net.reconstructor),
                       "s": count_parameters(net.segmentor)},
    }
    path = write_model_file(args.out, manifest, net.state_dict(), table)
    mean_bits = sum(entropy.ideal_bits(z, table, arch["ndim"]) for z in latents) / len(latents)
    print(json.dumps({"file": str(path), "mean_ideal_payload_bits_train": round(mean_bits, 1),
                      **manifest["parameters"]}))


if __name__ == "__main__":
    main()

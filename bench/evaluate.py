"""Whole-file rate, Dice and timings of the installed models on their test sets.

    python -m bench.evaluate --data ../shared/data [--out bench/results]

ISIC 2017 val (150 images) for the 2D model, the seeded hippocampus test split (40 volumes)
for the 3D one.  Rates are whole-file bytes x 8 / input pixels (header included); volumes are
coded as NIfTI input is, with their geometry section, and also without it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import segcodec
from segcodec import entropy, metrics, zoo
from segcodec.train import data as training_data

from .common import RESULTS, command, from_chw, machine, median_seconds


def compressor_cost(model: zoo.Model, shape) -> dict:
    """Parameters and FLOPs of C for one input of ``shape`` (resampled to the working grid)."""
    arch = model.manifest.architecture.to_json()
    x = torch.zeros((1, arch["in_channels"], *arch["work_shape"]))
    # With gradients on, 3D convolutions take PyTorch's own operator, the one FlopCounterMode
    # counts (at inference networks.Conv3d calls oneDNN's directly).
    with FlopCounterMode(display=False) as counter:
        model.net.compressor(x)
    return {"input_shape": list(shape), "work_shape": arch["work_shape"],
            "parameters": sum(p.numel() for p in model.net.compressor.parameters()),
            "mflops": round(counter.get_total_flops() / 1e6, 1)}


def context_gain(model: zoo.Model, latents: list, payload_bytes: list) -> dict:
    """Ideal bits under the model's context tables against a per-channel probability fitted
    on these very latents (an oracle baseline), and the coder's overhead over ideal."""
    k, ndim = latents[0].shape[0], latents[0].ndim - 1
    per = len(model.table) // k
    flat = np.empty_like(model.table)
    for c in range(k):
        ones = sum(int(z[c].sum()) for z in latents)
        total = sum(z[c].size for z in latents)
        flat[c * per:(c + 1) * per] = np.clip(round((ones + 0.5) / (total + 1) * 65536), 1, 65535)
    ctx = sum(entropy.ideal_bits(z, model.table, ndim) for z in latents)
    marginal = sum(entropy.ideal_bits(z, flat, ndim) for z in latents)
    actual = 8 * sum(payload_bytes)
    return {"raw_latent_bits": int(latents[0].size),
            "mean_ideal_bits_context": round(ctx / len(latents), 1),
            "mean_ideal_bits_per_channel": round(marginal / len(latents), 1),
            "context_saving": round(1 - ctx / marginal, 4),
            "mean_payload_bits": round(actual / len(latents), 1),
            "payload_over_ideal": round(actual / ctx - 1, 4)}


def evaluate(model: zoo.Model, pairs, kind: str, geometry: bool) -> dict:
    bpp, sizes, scores, latents, payloads = [], [], [], [], []
    header_bytes = None
    for image_path, label_path in pairs:
        image, truth = training_data.read_pair(image_path, label_path)
        array = from_chw(image, model.ndim)
        affine = None
        if geometry:
            import nibabel as nib
            affine = nib.load(image_path).affine
        data = segcodec.encode(array, model=model, kind=kind, affine=affine)
        labels = segcodec.segment(data)
        decoded = segcodec.decode(data)
        header_bytes = decoded.header.header_bytes
        latents.append(decoded.latents)
        payloads.append(len(data) - header_bytes)
        sizes.append(len(data))
        bpp.append(len(data) * 8 / truth.size)
        scores.append(metrics.scores(labels, truth, len(model.labels))["dice"])
    scores = np.asarray(scores)
    return {"cases": len(pairs), "geometry": geometry, "mean_bpp": round(float(np.mean(bpp)), 5),
            "mean_bytes": round(float(np.mean(sizes)), 1), "max_bytes": int(max(sizes)),
            "header_bytes": header_bytes,
            "dice_per_class": {model.labels[c + 1]: round(float(v), 4)
                               for c, v in enumerate(scores.mean(0))},
            "mean_dice": round(float(scores.mean()), 4),
            "entropy_coding": context_gain(model, latents, payloads)}


def timings(model: zoo.Model, array, kind: str, repeat: int) -> dict:
    """Median encode and segment times, each after a warm-up call (JIT, caches)."""
    data = segcodec.encode(array, model=model, kind=kind)
    return {"shape": list(array.shape),
            "encode_ms": round(1e3 * median_seconds(
                lambda: segcodec.encode(array, model=model, kind=kind), repeat), 2),
            "segment_ms": round(1e3 * median_seconds(lambda: segcodec.segment(data), repeat), 2),
            "repeat": repeat, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    for task in ("isic", "hippocampus"):
        training_data.check_root(args.data, task)
    m2, m3 = zoo.default_for(2), zoo.default_for(3)
    isic = training_data.isic_files(args.data, "val")
    hippo = training_data.hippocampus_files(args.data, "test")
    image = from_chw(training_data.read_pair(*isic[0])[0], 2)
    volume = from_chw(training_data.read_pair(*hippo[0])[0], 3)
    result = {
        "command": command("evaluate", argv),
        "machine": machine(),
        "models": {"2d": m2.describe(), "3d": m3.describe()},
        "isic2017_val": evaluate(m2, isic, "2d", geometry=False),
        "hippocampus_test": evaluate(m3, hippo, "3d", geometry=True),
        "hippocampus_test_no_geometry": evaluate(m3, hippo, "3d", geometry=False),
        "compressor": {"2d_256x256": compressor_cost(m2, (256, 256)),
                       "3d_64cube": compressor_cost(m3, (64, 64, 64))},
        "timings": {"2d": timings(m2, image, "2d", args.repeat),
                    "3d": timings(m3, volume, "3d", args.repeat)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluate.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "models"}, indent=1))


if __name__ == "__main__":
    main()

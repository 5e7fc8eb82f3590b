"""Pictures like the paper's Fig. 4: what g reconstructs from a .sgc, and the labels s makes.

    python -m bench figures [--data ../shared/data] [--smoke] [--out bench/results]

One row per case (4 ISIC val images and 2 hippocampus test volumes with --data, else the
fixtures): the original, g's one-channel feature map decoded from the file's binary latents
(``model.net.reconstructor(z)``, at the model's working resolution, stretched over the
input's extent), the predicted labels and the true ones.  Volumes show their middle slice
along the first axis; their Dice is over the whole volume.  Writes figures.png, figures.json
and figures.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import segcodec
from segcodec import api

from .common import (RESULTS, Sample, command, load_samples, machine, mean_dice, model_names,
                     n_classes, write_outputs)


def reconstruct(case: Sample) -> dict:
    """Encode, then from the file alone: g's feature map, labels, bytes and Dice."""
    data = segcodec.encode(case.array, kind=case.kind)
    decoded = segcodec.decode(data)
    with torch.no_grad():
        z = torch.from_numpy(decoded.latents.astype(np.float32))[None]
        feature = decoded.model.net.reconstructor(z)[0, 0].numpy()
    labels = api.labels_from_latents(decoded, "cpu")
    pixels = case.truth.size
    return {"feature": feature, "labels": labels, "bytes": len(data),
            "bpp": len(data) * 8 / pixels, "dice": mean_dice(labels, case.truth, case.task),
            "model": decoded.model.name}


def _middle(volume: np.ndarray, of: int | None = None) -> np.ndarray:
    """The slice along axis 0 at the middle of ``of`` slices, mapped onto this volume's."""
    of = of or volume.shape[0]
    return volume[int((of // 2 + 0.5) * volume.shape[0] / of)]


def plot(cases: list[Sample], outs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = ("original", "g's feature map", "predicted labels", "true labels")
    fig, axes = plt.subplots(len(cases), 4, figsize=(9, 2.4 * len(cases)), squeeze=False)
    for row, case, out in zip(axes, cases, outs):
        image, feature = case.array, out["feature"]
        labels, truth = out["labels"], case.truth
        if case.kind == "3d":
            depth = image.shape[0]
            image, labels, truth = _middle(image), _middle(labels), _middle(truth)
            feature = _middle(feature, depth)
        h, w = truth.shape
        top = n_classes(case.task) - 1
        row[0].imshow(image, cmap=None if image.ndim == 3 else "gray")
        # the feature map keeps its own (working-grid) pixels, drawn over the input's extent;
        # percentiles, as a few extreme border values would otherwise flatten its contrast
        lo, hi = np.percentile(feature, [1, 99])
        row[1].imshow(feature, cmap="gray", extent=(0, w, h, 0), vmin=lo, vmax=hi)
        for ax, lab in ((row[2], labels), (row[3], truth)):
            ax.imshow(lab, cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
        row[0].set_ylabel(f"{case.name}\n{out['bytes']} B, {out['bpp']:.4f} bpp\n"
                          f"Dice {out['dice']:.3f}", fontsize=8)
        for ax, title in zip(row, titles):
            ax.set_xticks([])
            ax.set_yticks([])
            if row is axes[0]:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="../shared/data; without it, fixtures/")
    ap.add_argument("--smoke", action="store_true", help="fixtures only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    data = None if args.smoke else args.data
    cases = load_samples(data, {"isic": 4 if data else 2, "hippocampus": 2})
    outs = [reconstruct(c) for c in cases]
    result = {"command": command("figures", argv), "machine": machine(),
              "models": model_names(),
              "cases": [{"name": c.name, "task": c.task, "shape": list(c.array.shape),
                         "model": o["model"], "bytes": o["bytes"], "bpp": round(o["bpp"], 5),
                         "dice": round(o["dice"], 4),
                         "feature_map_shape": list(o["feature"].shape)}
                        for c, o in zip(cases, outs)]}
    lines = [f"# Fig. 4-style pictures (`{result['command']}`)", "",
             "![figures](figures.png)", "",
             "Rows: cases; columns: the original, g's feature map reconstructed from the "
             ".sgc's latents (working grid, middle slice along the first axis for volumes), "
             "predicted and true labels. Dice: mean over foreground classes, whole image or "
             "volume.", "", "| case | shape | model | bytes | bpp | Dice |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {'x'.join(map(str, c['shape']))} | {c['model']} | {c['bytes']} "
              f"| {c['bpp']:.4f} | {c['dice']:.3f} |" for c in result["cases"]]
    write_outputs(args.out, "figures", result, "\n".join(lines) + "\n")
    plot(cases, outs, args.out / "figures.png")


if __name__ == "__main__":
    main()

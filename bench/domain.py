"""How often the domain check refuses what it should code, and codes what it should refuse.

    python -m bench domain --data ../shared/data [--subsets 20] [--out bench/results]

- The default models on cases of their own kind that nobody chose them on: the 2D model on
  ISIC 2017's 600 unlabelled test images and its 150 val images, the 3D model on the
  hippocampus test split (only refusals are counted; nothing is tuned on them).  Each should
  pass.
- Models of few images, as users train them: the domain that ``segcodec export`` would write
  for random subsets of n ISIC training images (``describe_photos``, and
  ``describe_appearance`` of the default model's C features), and the share of the 600 test
  images each refuses, under the rules before and after issue 23 (a margin of a tenth of the
  span and a fixed appearance factor, against ones that widen for few images).
- Photographs of other kinds: fixtures/ood and, where scikit-image is installed, its sample
  images (a fundus photograph, an immunohistochemistry slide...), coded or refused.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segcodec
from segcodec import api, domain, zoo
from segcodec.coder import Coder
from segcodec.train import data as training_data

from .common import FIXTURES, RESULTS, command, machine, write_outputs

SUBSET_SIZES = (15, 40, 100, 400)
SKIMAGE_SAMPLES = ("retina", "immunohistochemistry", "astronaut", "coffee", "chelsea",
                   "rocket", "hubble_deep_field")


def _photo(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def refusals(images) -> dict:
    """How many of ``images`` (arrays or paths) the default model refuses, and why."""
    names, why = [], {}
    for name, image in images:
        names.append(name)
        try:
            segcodec.encode(image)
        except segcodec.InputError as exc:
            why[name] = str(exc)
    return {"cases": len(names), "refused": len(why), "names": names, "why": why}


def _features(model: zoo.Model, image: np.ndarray) -> np.ndarray:
    """C's appearance features of one photograph, as ``api.compress`` computes them."""
    p = api.prepare(image, model=model, force=True)
    activations: list = []
    coder = Coder.of(model)
    coder.latents(coder.grid(p.array), activations)
    return domain.appearance_features([a[None] for a in activations])[0]


def small_models(train: list[np.ndarray], test: list[np.ndarray], subsets: int,
                 model: zoo.Model) -> list[dict]:
    """Refusal rates on ``test`` of the domains of random subsets of ``train``."""
    stats = lambda images: np.array([[s[k] for k in domain.STATISTICS] for s in  # noqa: E731
                                     (domain.photo_statistics(np.moveaxis(i, -1, 0))
                                      for i in images)])
    train_stats, test_stats = stats(train), stats(test)
    train_features = np.array([_features(model, i) for i in train])
    test_features = np.array([_features(model, i) for i in test])
    rng = np.random.default_rng(0)
    rows = []
    for n in SUBSET_SIZES:
        if n >= len(train):
            continue
        rates = {key: [] for key in ("statistics_before", "statistics_now",
                                     "appearance_before", "appearance_now")}
        for _ in range(subsets):
            pick = rng.choice(len(train), n, replace=False)
            lo, hi = train_stats[pick].min(0), train_stats[pick].max(0)
            for key, pad in (("statistics_before", domain.MARGIN * (hi - lo)),
                             ("statistics_now", (domain.MARGIN + domain.SMALL_SET / math.sqrt(n))
                              * (hi - lo) + domain.FLOOR)):
                low, high = np.maximum(0, lo - pad), np.minimum(1, hi + pad)
                rates[key].append(float(((test_stats < low) | (test_stats > high)).any(1).mean()))
            appearance = domain.describe_appearance(train_features[pick])
            distance = domain.appearance_distance(test_features, appearance)
            now = appearance["limit"]
            for key, limit in (("appearance_before", now / (1 + 1 / math.sqrt(n))),
                               ("appearance_now", now)):
                rates[key].append(float((distance > limit).mean()))
        rows.append({"n": n, **{k: round(float(np.mean(v)), 4) for k, v in rates.items()}})
    return rows


def other_kinds() -> dict:
    """The default 2D model on photographs that are not dermoscopy."""
    images = [(p.stem, _photo(p)) for p in sorted((FIXTURES / "ood").glob("*.jpg"))]
    try:
        from skimage import data as samples
    except ImportError:
        samples = None
    for name in SKIMAGE_SAMPLES if samples is not None else ():
        try:
            images.append((f"skimage {name}", np.asarray(getattr(samples, name)())))
        except Exception:  # noqa: BLE001 - a sample that needs a download is left out
            continue
    return refusals(images)


def run(data: Path, subsets: int) -> dict:
    isic = data / "isic2017"
    test = sorted((isic / "test_unlabeled" / "images").glob("*.jpg"))
    val = sorted((isic / "val" / "images").glob("*.jpg"))
    train = [p for p, _ in training_data.task_pairs("isic", data, "train")]
    hippocampus = [p for p, _ in training_data.task_pairs("hippocampus", data, "test")]
    model = zoo.default_for(2)
    test_images = [_photo(p) for p in test]
    return {
        "models": {"2d": model.name, "3d": zoo.default_for(3).name},
        "isic_test_unlabeled": refusals(zip((p.name for p in test), test_images)),
        "isic_val": refusals((p.name, _photo(p)) for p in val),
        "hippocampus_test": refusals((p.name, p) for p in hippocampus),
        "small_models": small_models([_photo(p) for p in train], test_images, subsets, model),
        "other_kinds": other_kinds(),
    }


def markdown(result: dict) -> str:
    lines = [f"# Domain check: what it refuses\n\n`{result['command']}`\n",
             f"Default models: {result['models']['2d']} (2D), {result['models']['3d']} (3D).\n",
             "| cases of the model's own kind | cases | refused |", "|---|---|---|"]
    for key in ("isic_test_unlabeled", "isic_val", "hippocampus_test"):
        lines.append(f"| {key} | {result[key]['cases']} | {result[key]['refused']} |")
    lines += ["", "Models of n ISIC training images: share of the 600 test images refused "
              "(mean of the random subsets), by the colour statistics and by C's appearance, "
              "under the rules before issue 23 and now.", "",
              "| n | statistics before | statistics now | appearance before | appearance now |",
              "|---|---|---|---|---|"]
    for row in result["small_models"]:
        lines.append(f"| {row['n']} | {row['statistics_before']:.2%} | "
                     f"{row['statistics_now']:.2%} | {row['appearance_before']:.2%} | "
                     f"{row['appearance_now']:.2%} |")
    other = result["other_kinds"]
    lines += ["", "Photographs of other kinds, given to the default 2D model:", "",
              "| image | |", "|---|---|"]
    for name in other["names"]:
        lines.append(f"| {name} | {other['why'].get(name, 'coded')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench domain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="Folder holding isic2017/ and msd_hippocampus/.")
    parser.add_argument("--subsets", type=int, default=20,
                        help="Random training subsets per size.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.data, args.subsets)
    result.update(command=command("domain", argv), machine=machine(1))
    write_outputs(args.out, "domain", result, markdown(result))


if __name__ == "__main__":
    main()

"""Checkpoint -> zoo model: weights, integer entropy tables fitted on training latents, manifest.

    segcodec export runs/isic-d4/checkpoint.pt --data ../shared/data --name isic-lesion-v1
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import domain, entropy, orientation
from ..coder import Coder
from ..manifest import Manifest
from ..networks import SegCodecNet, count_parameters
from ..transforms import photo_intensities
from ..zoo import write_model_file
from . import data, loop
from .recipes import Recipe

__all__ = ["export"]


@torch.no_grad()
def appearance(net: SegCodecNet, x: torch.Tensor, batch: int = 100):
    """``domain.appearance_features`` of the working-grid images ``x``."""
    rows = []
    for i in range(0, len(x), batch):
        activations = []
        net.compressor(x[i:i + batch], activations)
        rows.append(domain.appearance_features(activations))
    return np.concatenate(rows)


def training_domain(cfg: Recipe, root: Path, net: SegCodecNet, x: torch.Tensor) -> dict:
    """The model's domain (``segcodec.domain``) from its training cases' files and, for
    photographs, from what C makes of them (``x``: the working-grid training images)."""
    pairs = data.task_pairs(cfg.task_key, root, "fit")
    if cfg.arch["ndim"] == 2:
        if cfg.arch["in_channels"] != 3:
            return {"channels": cfg.arch["in_channels"]}
        photos = domain.describe_photos(photo_intensities(data.read_pair(p, q, channels=3)[0])
                                        for p, q in pairs)
        described = domain.describe_appearance(appearance(net, x))
        return {**photos, **({"appearance": described} if described else {})}
    import nibabel as nib
    codes = cfg.orientation
    shapes, spacings = [], []
    for image_path, _ in pairs:
        img = nib.load(image_path)
        ornt = orientation.transform(img.affine, codes)
        shapes.append(orientation.model_shape(img.shape[:3], ornt))
        spacings.append(orientation.model_spacing(img.affine, ornt))
    return domain.describe_volumes(shapes, spacings)


def build_model(net: SegCodecNet, cfg: Recipe, x: torch.Tensor, name: str, is_default: bool,
                training: dict, domain_: dict | None = None):
    """(manifest, state_dict, table, latents) for a trained network and its training images."""
    latents = list(Coder.of_network(net, cfg.normalisation, cfg.arch).batch_latents(x))
    table = entropy.fit_table(latents, cfg.arch["ndim"])
    manifest = Manifest.from_json({
        "name": name, "task": cfg.task, "labels": cfg.labels,
        "normalisation": cfg.normalisation, "architecture": cfg.arch,
        # Volumes are reoriented to the training data's axes before C (format_spec.md §2.3).
        **({"orientation": cfg.orientation} if cfg.orientation else {}),
        "default": is_default, "training": training,
        **({"domain": domain_} if domain_ else {}),
        "parameters": {"C": count_parameters(net.compressor),
                       "g": count_parameters(net.reconstructor),
                       "s": count_parameters(net.segmentor)},
    })
    return manifest, net.state_dict(), table, latents


def export(checkpoint: Path, root: Path, name: str, out: Path = Path("models"),
           is_default: bool = False, cache: Path | None = None) -> dict:
    """Write the checkpoint's model file into ``out`` (a folder of your own: add it to
    SEGCODEC_MODEL_PATH; only a maintainer shipping a model names the package's models/)."""
    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        cfg = Recipe.load(ck["config"])
    except Exception as exc:  # pickle, zip, key and config errors alike: not a training checkpoint
        raise ValueError(f"{checkpoint}: not a segcodec training checkpoint ({exc})") from exc
    data.check_root(root, cfg.task_key)  # the tables are fitted on the training set
    if not cfg.compress or cfg.target != "labels":
        raise ValueError(f"{checkpoint}: design {cfg.design!r} has no C+g+s to export")
    net, _ = loop.load_checkpoint(checkpoint, best=True)
    x, _, _ = data.cached_set(cfg, root, "fit", cache)
    picked = ck.get("best") or {"step": ck["step"]}
    training = {"recipe": cfg.name, "steps": picked["step"], "seed": cfg.seed,
                "train_seconds": round(ck["elapsed"]), "train_cases": len(x),
                **({"hardware": ck["hardware"]} if ck.get("hardware") else {})}
    manifest, state, table, latents = build_model(net, cfg, x, name, is_default, training,
                                                  training_domain(cfg, root, net, x))
    path = write_model_file(out, manifest, state, table)
    mean_bits = sum(entropy.ideal_bits(z, table, cfg.arch["ndim"])
                    for z in latents) / len(latents)
    return {"file": str(path), "mean_ideal_payload_bits_train": round(mean_bits, 1),
            **manifest.parameters}

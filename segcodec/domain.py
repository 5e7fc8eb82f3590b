"""A model's domain: the inputs like its training data, which ``encode`` checks before coding.

A network gives confident labels for anything, so an input far from what a model was trained
on (a whole brain for a hippocampus model, a grey CT slice or a portrait for the dermoscopy
model) is refused with the mismatch named, unless the caller forces it.  The manifest's
``domain`` entry (written by ``segcodec export`` from the training cases) holds:

- ``channels``: the image channels the model takes;
- 3D: ``voxel_size_mm`` and ``field_of_view_mm`` (per axis, in the model's orientation):
  [low, high] ranges, the training data's times ``SIZE_FACTOR`` (0.5 and 1.5);
- 2D photographs: ``statistics``, per-image [low, high] of each channel's mean and spread
  and of the fraction of near-black pixels, on the 0..1 scale, the training data's widened
  by ``MARGIN`` of their span.

Models without a ``domain`` (v0, v1) check nothing beyond their channels.

``force`` codes an input outside the domain, but not one larger than ``max_voxels``: a
volume may not declare more voxels than the model's largest field of view holds at its finest
voxel size, which bounds the work a (possibly hostile) file can ask of a decoder.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import InputError

MARGIN = 0.1  # photo statistics: a tenth of the training span on either side
SIZE_FACTOR = (0.5, 1.5)  # sizes vary little within a data set: half to one and a half
STATISTICS = ("mean_r", "mean_g", "mean_b", "spread_r", "spread_g", "spread_b", "dark")


def photo_statistics(image: np.ndarray) -> dict[str, float]:
    """Channels-first RGB image on the 0..255 scale -> the statistics the domain checks."""
    x = image.reshape(image.shape[0], -1).astype(np.float64) / 255.0
    mean, spread = x.mean(1), x.std(1)
    dark = float((x.mean(0) < 0.1).mean())
    return dict(zip(STATISTICS, [*mean.tolist(), *spread.tolist(), dark]))


def describe_photos(images) -> dict:
    """The domain of 2D RGB training images (channels first, 0..255)."""
    rows = [photo_statistics(im) for im in images]
    stats = {}
    for key in STATISTICS:
        values = np.array([r[key] for r in rows])
        lo, hi = float(values.min()), float(values.max())
        pad = MARGIN * (hi - lo)
        stats[key] = [round(max(0.0, lo - pad), 4), round(min(1.0, hi + pad), 4)]
    return {"channels": 3, "statistics": stats}


def describe_volumes(shapes, spacings) -> dict:
    """The domain of 3D training volumes: shapes and voxel sizes in the model's orientation."""
    spacings = np.asarray(spacings, dtype=np.float64)
    fov = np.asarray(shapes, dtype=np.float64) * spacings
    return {"channels": 1,
            "voxel_size_mm": [round(float(spacings.min()) * SIZE_FACTOR[0], 4),
                              round(float(spacings.max()) * SIZE_FACTOR[1], 4)],
            "field_of_view_mm": [[round(float(lo) * SIZE_FACTOR[0], 2),
                                  round(float(hi) * SIZE_FACTOR[1], 2)]
                                 for lo, hi in zip(fov.min(0), fov.max(0))]}


def max_voxels(manifest: dict) -> int | None:
    """The most voxels a ``.sgc`` file for this model may declare; None where its domain sets
    no size (photographs, models without a domain)."""
    domain = manifest.get("domain") or {}
    if "field_of_view_mm" not in domain:
        return None
    finest = domain["voxel_size_mm"][0]
    return math.prod(math.ceil(hi / finest) for _, hi in domain["field_of_view_mm"])


def check(image: np.ndarray, spacing: np.ndarray | None, manifest: dict) -> None:
    """InputError naming the first mismatch between an input and the model's domain.

    ``image`` is channels first, in the model's orientation and intensity scale; ``spacing``
    its voxel sizes in that orientation (None without an affine).
    """
    domain = manifest.get("domain")
    if not domain:
        return
    name = manifest["name"]
    problems = []
    if image.shape[0] != domain["channels"]:
        kinds = {1: "grey", 3: "RGB"}
        problems.append(f"{kinds.get(image.shape[0], image.shape[0])} images, where the model "
                        f"takes {kinds.get(domain['channels'], domain['channels'])} ones")
    if "statistics" in domain and not problems:
        stats = photo_statistics(image)
        for key, (lo, hi) in domain["statistics"].items():
            if not lo <= stats[key] <= hi:
                problems.append(f"{key.replace('_', ' ')} {stats[key]:.3g} outside its training "
                                f"range {lo:g}..{hi:g}")
    if "field_of_view_mm" in domain:
        if spacing is not None:
            lo, hi = domain["voxel_size_mm"]
            for axis, s in enumerate(spacing):
                if not lo <= s <= hi:
                    problems.append(f"voxel size {s:.3g} mm on axis {axis}, outside "
                                    f"{lo:g}..{hi:g} mm")
        fov = np.asarray(image.shape[1:], dtype=np.float64) * (
            spacing if spacing is not None else 1.0)
        for axis, (size, (lo, hi)) in enumerate(zip(fov, domain["field_of_view_mm"])):
            if not lo <= size <= hi:
                problems.append(f"field of view {size:.4g} mm on axis {axis}, outside "
                                f"{lo:g}..{hi:g} mm" + ("" if spacing is not None else
                                                          " (1 mm voxels assumed: no affine)"))
    if problems:
        raise InputError(f"input is outside model {name}'s domain: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                         + "; force=True (--force) codes it anyway")

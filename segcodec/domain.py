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
  for their number (``MARGIN``); and, from isic-lesion-v3.1 on, ``max_aspect``
  (``PHOTO_MAX_ASPECT``, the long side over the short) and ``appearance``: what C's own
  features look like on the training images (``describe_appearance``).  The colour
  statistics alone pass skimage's astronaut portrait; C's features do not.

Models without a ``domain`` (v0, v1) check nothing beyond their channels.

Even with ``force``, a file may not declare a shape its model's domain rules out.  A volume
may hold no more voxels than the model's largest field of view holds at its finest voxel
size, which bounds the work a (possibly hostile) file can ask of a decoder.  A photograph's
long side may be at most ``max_aspect`` times its short side; its pixels are bounded only by
the format (2^26), since photographs come at any size.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import InputError, SgcError

# Photo statistics: the training range widened on either side by (MARGIN + SMALL_SET / sqrt(n))
# of its span plus FLOOR (on the 0..1 scale).  n images' range leaves out about 2 / (n + 1) of
# their kind per statistic, and a statistic all n share has no span: with MARGIN alone, a
# model trained on 40 ISIC images refused 7% of the others (a range of zero refused 4 of 15).
# Measured on ISIC (random training subsets against the 600 test images): 2.3% at n = 15,
# 1.6% at 40, 0.2% at 1,850.
MARGIN = 0.1
SMALL_SET = 2.0
FLOOR = 0.05
# Where C's features are checked too (``appearance``), they judge what is like the training
# images, and the statistics only rule out the grossly unlike: their range is widened by this
# fraction of its span more when checked.  (isic-lesion-v4 refused 2 of the 600 ISIC 2017
# test images, dark with black borders, 0.16 and 0.03 of a span out, that C finds typical.)
COARSE = 0.25
SIZE_FACTOR = (0.5, 1.5)  # sizes vary little within a data set: half to one and a half
# Photographs come at any size (training sets are often resized copies), but no camera makes
# one longer than 4:1; a file declaring 59880x256 asks for work, not labels.
PHOTO_MAX_ASPECT = 4.0
# Appearance: C's features pooled, whitened onto their first AXES principal axes; an input is
# like the training images when its NEIGHBOURS-th nearest training image is within ``limit``:
# LIMIT_FACTOR (1 + 1 / sqrt(n)) times the 99.9th percentile of that distance among the n
# training images themselves (each left out of its own neighbours); the second factor, for
# few images, took the ISIC images refused by a model of 15 from 6% to 3% (40: 0.9% to 0.4%).
# Models exported before it (isic-lesion-v3.1, -v4) have LIMIT_FACTOR alone.
AXES = 8
NEIGHBOURS = 5
LIMIT_FACTOR = 1.25
MAX_REFERENCE = 1 << 17  # training images a model file may list: bounds the check's work
STATISTICS = ("mean_r", "mean_g", "mean_b", "spread_r", "spread_g", "spread_b", "dark")


def photo_statistics(image: np.ndarray) -> dict[str, float]:
    """Channels-first RGB image on the 0..255 scale -> the statistics the domain checks."""
    if image.dtype == np.uint8:  # contiguous: channels-last sums are several times slower
        return _uint8_statistics(np.ascontiguousarray(image).reshape(image.shape[0], -1))
    x = image.reshape(image.shape[0], -1).astype(np.float64, copy=False) / 255.0
    mean, spread = x.mean(1), x.std(1)
    dark = float((x.mean(0) < 0.1).mean())
    return dict(zip(STATISTICS, [*mean.tolist(), *spread.tolist(), dark]))


def _uint8_statistics(x: np.ndarray) -> dict[str, float]:
    """``photo_statistics`` of 8-bit pixels (C, N) from exact integer sums of the values and
    their squares: the same values to float rounding, without float64 copies (they cost more
    than C does).  Below 2^53 (any image of under 10^11 pixels) the sums are exact in float64,
    so the statistics do not depend on the order of summation."""
    n = x.shape[1]
    wide = x.astype(np.uint16)  # 255^2 fits
    total = wide.sum(1, dtype=np.uint64).astype(np.float64)
    squares = np.multiply(wide, wide, out=wide).sum(1, dtype=np.uint64).astype(np.float64)
    mean = total / n
    spread = np.sqrt(np.maximum(squares / n - mean * mean, 0.0)) / 255.0
    brightness = x.sum(0, dtype=np.uint16)  # over channels: the mean is under 0.1 of 255
    dark = float(np.count_nonzero(brightness * 10 < 3 * 255) / n)
    return dict(zip(STATISTICS, [*(mean / 255.0).tolist(), *spread.tolist(), dark]))


def describe_photos(images) -> dict:
    """The domain of 2D RGB training images (channels first, 0..255)."""
    rows = [photo_statistics(im) for im in images]
    stats = {}
    for key in STATISTICS:
        values = np.array([r[key] for r in rows])
        lo, hi = float(values.min()), float(values.max())
        pad = (MARGIN + SMALL_SET / math.sqrt(len(values))) * (hi - lo) + FLOOR
        stats[key] = [round(max(0.0, lo - pad), 4), round(min(1.0, hi + pad), 4)]
    return {"channels": 3, "statistics": stats, "max_aspect": PHOTO_MAX_ASPECT}


def appearance_features(activations) -> np.ndarray:
    """C's hidden activations (N images, channels first: torch tensors from
    ``networks.Compressor.forward(x, features)``, or numpy arrays) -> (N, F): each channel's
    mean and spread over space in the last two, at C's coarsest scale."""
    pooled = []
    for a in activations[-2:]:
        a = a.detach().cpu().double().numpy() if hasattr(a, "detach") else np.asarray(a, float)
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        pooled += [flat.mean(2), flat.std(2, ddof=1)]
    return np.concatenate(pooled, 1)


def _kth_nearest(points: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest reference point (k from 1)."""
    out = np.empty(len(points))
    for i in range(0, len(points), 256):  # a block at a time: the distance matrix stays small
        d = np.sqrt(((points[i:i + 256, None] - reference[None]) ** 2).sum(-1))
        out[i:i + 256] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


def describe_appearance(features: np.ndarray) -> dict | None:
    """The ``appearance`` entry of a domain, from the training images' ``appearance_features``;
    None for fewer than two distinct images (nothing to compare with).

    Rounded before the training images are projected, so the reference points and the limit
    are those the check will compute from the manifest's numbers."""
    neighbours = min(NEIGHBOURS, len(features) - 1)
    if neighbours < 1:
        return None
    mean = np.round(features.mean(0), 6)
    scale = np.maximum(np.round(features.std(0), 6), 1e-6)  # a constant feature: any scale
    z = (features - mean) / scale
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    # N images span at most N - 1 axes; an axis they do not spread along would divide by 0
    rank = int((singular > singular[0] * 1e-6).sum()) if singular[0] > 0 else 0
    n_axes = min(AXES, rank, len(z) - 1)
    if n_axes < 1:
        return None
    axes = np.round(vt[:n_axes] * (math.sqrt(len(z)) / singular[:n_axes, None]), 6)
    reference = np.round(z @ axes.T, 3)
    # k + 1 nearest: every training image is its own nearest, at distance 0
    own = _kth_nearest(reference, reference, neighbours + 1)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "axes": axes.tolist(),
            "reference": reference.tolist(), "neighbours": neighbours,
            "limit": round(float(np.percentile(own, 99.9)) * LIMIT_FACTOR
                           * (1 + 1 / math.sqrt(len(z))), 4)}


def appearance_distance(features: np.ndarray, appearance: dict) -> np.ndarray:
    """How far inputs' ``appearance_features`` are from the training images (see AXES)."""
    z = (features - np.asarray(appearance["mean"])) / np.asarray(appearance["scale"])
    return _kth_nearest(z @ np.asarray(appearance["axes"]).T,
                        np.asarray(appearance["reference"]), appearance["neighbours"])


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


def max_voxels(domain: dict | None) -> int | None:
    """The most voxels a ``.sgc`` file for a model of this domain may declare; None where it
    sets no size (photographs, models without a domain)."""
    domain = domain or {}
    if "field_of_view_mm" not in domain:
        return None
    finest = domain["voxel_size_mm"][0]
    return math.prod(math.ceil(hi / finest) for _, hi in domain["field_of_view_mm"])


def oversize(shape, manifest, bounds: dict | None = None) -> str | None:
    """Why a file of this shape may not be coded for this model, even forced; None if it may.
    (Checked from a ``.sgc`` header before any decoding work.)  ``bounds``: what the built-in
    index gives a model whose manifest predates its domain (``zoo.Model.bounds``)."""
    bounds = bounds or {}
    limit = max_voxels(manifest.domain) or bounds.get("max_voxels")
    voxels = math.prod(shape)
    if limit is not None and voxels > limit:
        return (f"shape {tuple(shape)} ({voxels} voxels) is more than model "
                f"{manifest.name} takes ({limit})")
    aspect = (manifest.domain or {}).get("max_aspect") or bounds.get("max_aspect")
    if aspect is not None and max(shape) > aspect * min(shape):
        return (f"shape {tuple(shape)} is longer than model {manifest.name} takes (at most "
                f"{aspect:g} times as long as wide)")
    return None


def check_appearance(activations, appearance: dict, model_name: str) -> None:
    """InputError where an input's C features (``Compressor.forward(x, features)``, one image)
    are unlike every training image's (``appearance``: a domain's entry)."""
    distance = float(appearance_distance(appearance_features(activations), appearance)[0])
    if not distance <= appearance["limit"]:  # NaN features are refused too
        _refuse(model_name, [f"it does not look like the model's training images (appearance "
                             f"distance {distance:.3g}, limit {appearance['limit']:g})"])


def validate(domain: dict | None, arch: dict) -> None:
    """SgcError unless a manifest's ``domain`` has the fields and sizes this module reads;
    checked when a model file loads, before any input meets it."""
    if domain is None:
        return
    if not isinstance(domain, dict) or domain.get("channels") != arch["in_channels"]:
        raise SgcError("domain does not match the architecture's input channels")
    aspect = domain.get("max_aspect", 1.0)
    if not isinstance(aspect, (int, float)) or not 1.0 <= aspect < math.inf:
        raise SgcError("domain max_aspect must be a number of at least 1")
    if "field_of_view_mm" in domain or "voxel_size_mm" in domain:
        try:
            sizes = np.asarray(domain["voxel_size_mm"], dtype=np.float64)
            fov = np.asarray(domain["field_of_view_mm"], dtype=np.float64)
            ok = (sizes.shape == (2,) and fov.shape == (arch["ndim"], 2)
                  and np.isfinite(sizes).all() and np.isfinite(fov).all()
                  and 0 < sizes[0] <= sizes[1] and (fov > 0).all())
        except (KeyError, TypeError, ValueError) as exc:
            raise SgcError(f"domain sizes are malformed ({exc})") from exc
        if not ok:
            raise SgcError("domain voxel_size_mm / field_of_view_mm have the wrong sizes or values")
    appearance = domain.get("appearance")
    if appearance is None:
        return
    try:
        width = 4 * arch["c_widths"][-1]  # mean and spread of C's last two activations
        arrays = {k: np.asarray(appearance[k], dtype=np.float64)
                  for k in ("mean", "scale", "axes", "reference")}
        axes, reference = arrays["axes"], arrays["reference"]
        k, limit = appearance["neighbours"], appearance["limit"]
        ok = (arrays["mean"].shape == arrays["scale"].shape == (width,)
              and axes.ndim == 2 and axes.shape[1] == width and axes.shape[0] <= width
              and reference.ndim == 2 and reference.shape[1] == axes.shape[0]
              and len(reference) <= MAX_REFERENCE
              and isinstance(k, int) and 1 <= k <= len(reference)
              and all(np.isfinite(a).all() for a in arrays.values())
              and (arrays["scale"] > 0).all() and math.isfinite(limit) and limit > 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise SgcError(f"domain appearance is malformed ({exc})") from exc
    if not ok:
        raise SgcError("domain appearance has the wrong sizes or values")


def _refuse(model_name: str, problems: list[str]):
    raise InputError(f"input is outside model {model_name}'s domain: {problems[0]}"
                     + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                     + "; force=True (--force) codes it anyway")


def check(image: np.ndarray, spacing: np.ndarray | None, domain: dict | None,
          model_name: str) -> None:
    """InputError naming the first mismatch between an input and a model's ``domain``.

    ``image`` is channels first, in the model's orientation and intensity scale; ``spacing``
    its voxel sizes in that orientation (None without an affine).
    """
    if not domain:
        return
    problems = []
    if image.shape[0] != domain["channels"]:
        kinds = {1: "grey", 3: "RGB"}
        problems.append(f"{kinds.get(image.shape[0], image.shape[0])} images, where the model "
                        f"takes {kinds.get(domain['channels'], domain['channels'])} ones")
    if "statistics" in domain and not problems:
        stats = photo_statistics(image)
        coarse = COARSE if "appearance" in domain else 0.0
        for key, (lo, hi) in domain["statistics"].items():
            if not lo - coarse * (hi - lo) <= stats[key] <= hi + coarse * (hi - lo):
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
        _refuse(model_name, problems)

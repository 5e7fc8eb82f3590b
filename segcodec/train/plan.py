"""A task for any data set: its fingerprint, and the training config derived from it.

As nnU-Net plans from a data set's fingerprint, ``segcodec train --data DIR`` reads the
training cases of a data set folder (``segcodec.datasets``) once and derives:

- 2D or 3D, channels and label names (from ``dataset.json`` or the masks);
- the orientation: the one most training volumes are stored in (e.g. "RAS");
- the working grid: the median shape in that orientation, scaled down to the shipped model's
  number of working voxels of the same dimensionality (64² in 2D, 32x48x32 in 3D) and rounded
  to multiples of 8, C's downsampling;
- the normalisation, by modality: CT clipped to the foreground's 0.5 and 99.5 percentiles and
  z-scored with the data set's foreground mean and std; photographs (RGB, or grey 2D images)
  scaled by fixed channel statistics; MRI and anything else z-scored per image;
- C as the default model of the same dimensionality has it, starting from that model's
  weights where the input channels match (a C trained long on many images);
- the rest of the recipe (g's and s's widths, batch, steps, loss weights, augmentation) from
  the shipped task of the same dimensionality.

The fingerprint is written into every run's config, so a run records what it was planned from.
The model's domain (what ``encode`` accepts) is described from the same cases at export.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from .. import datasets, orientation
from .. import io as sgio

WORK_MULTIPLE = 8  # s (four widths in 2D) pools the grid three times; C halves it twice
FOREGROUND_SAMPLE = 10_000  # foreground voxels drawn per case for CT statistics (nnU-Net's)
STAT_CASES = 50


def fingerprint(ds: datasets.DataSet) -> dict:
    """What the training cases of ``ds`` look like: shapes, voxel sizes, intensities."""
    codes = _majority_orientation(ds) if ds.ndim == 3 else None
    shapes, spacings = [], []
    for case in ds.training:
        shape, spacing = _geometry(case.image, ds.ndim, codes)
        shapes.append(shape)
        spacings.append(spacing)
    fp = {"name": ds.name, "ndim": ds.ndim, "channels": ds.channels, "modality": ds.modality,
          "labels": ds.labels, "training_cases": len(ds.training), "test_cases": len(ds.test),
          "orientation": codes,
          "median_shape": [int(v) for v in np.median(shapes, 0)],
          "median_spacing": [round(float(v), 4) for v in np.median(spacings, 0)]
          if all(s is not None for s in spacings) else None}
    if ds.modality.upper() == "CT":
        fp["foreground_intensity"] = _foreground_intensity(ds, codes)
    return fp


def _majority_orientation(ds: datasets.DataSet) -> str:
    import nibabel as nib
    found = Counter()
    for case in ds.training:
        try:
            found["".join(nib.aff2axcodes(nib.load(case.image).affine))] += 1
        except Exception:  # a volume without a usable affine counts for none
            continue
    return found.most_common(1)[0][0] if found else "RAS"


def _geometry(path: Path, ndim: int, codes: str | None):
    """(shape, voxel sizes or None) from the header alone, in the orientation ``codes``."""
    if ndim == 2 and sgio.suffix(path) in sgio.RASTER_SUFFIXES:
        from PIL import Image
        with Image.open(path) as im:
            return (im.height, im.width), None
    import nibabel as nib
    img = nib.load(path)
    shape = tuple(int(s) for s in img.shape[:ndim])
    if ndim == 2:
        return shape, None
    ornt = orientation.transform(img.affine, codes)
    return orientation.model_shape(shape, ornt), orientation.model_spacing(img.affine, ornt)


def _foreground_intensity(ds: datasets.DataSet, codes: str | None) -> dict:
    rng = np.random.default_rng(0)
    values = []
    for case in ds.training[:STAT_CASES]:
        image, labels, _ = datasets.read_case(case, codes)
        fg = image[0][labels > 0]
        if fg.size:
            values.append(rng.choice(fg, min(FOREGROUND_SAMPLE, fg.size), replace=False))
    v = np.concatenate(values).astype(np.float64) if values else np.zeros(1)
    return {"p00_5": round(float(np.percentile(v, 0.5)), 3),
            "p99_5": round(float(np.percentile(v, 99.5)), 3),
            "mean": round(float(v.mean()), 3), "std": round(float(max(v.std(), 1e-3)), 3)}


def work_shape(median_shape, budget: int) -> list[int]:
    """The median shape, scaled down to about ``budget`` voxels where it has more, to the
    nearest multiples of 8."""
    median = np.asarray(median_shape, dtype=np.float64)
    scale = min(1.0, (budget / median.prod()) ** (1 / len(median)))
    return [max(WORK_MULTIPLE, int(m * scale / WORK_MULTIPLE + 0.5) * WORK_MULTIPLE)
            for m in median]


def normalisation(fp: dict) -> dict:
    if "foreground_intensity" in fp:
        f = fp["foreground_intensity"]
        return {"kind": "ct", "low": f["p00_5"], "high": f["p99_5"], "mean": f["mean"],
                "std": f["std"]}
    if fp["channels"] == 3 or fp["ndim"] == 2:
        return {"kind": "fixed"}  # its channel statistics are measured when a run starts
    return {"kind": "zscore"}


def task_key(name: str) -> str:
    """A data set's name as a recipe's task: lower case letters and digits."""
    return re.sub(r"[^a-z0-9]+", "", name.lower()) or "dataset"


def task(fp: dict) -> dict:
    """A task entry, as ``recipes.TASKS`` holds for the shipped ones, for a fingerprint."""
    from .recipes import TASKS
    template = TASKS["isic" if fp["ndim"] == 2 else "hippocampus"]
    layout, start = shipped_compressor(fp["ndim"], fp["channels"])
    arch = {**template["arch"], **layout}
    arch.update(in_channels=fp["channels"], n_classes=len(fp["labels"]),
                work_shape=work_shape(fp["median_shape"], int(np.prod(arch["work_shape"]))))
    if "g_channels" in arch:
        arch["g_channels"] = fp["channels"]
    return {**template, "task": f"{fp['name']} ({fp['modality']}, {fp['ndim']}D)",
            "labels": fp["labels"], "normalisation": normalisation(fp),
            "orientation": fp["orientation"], "arch": arch, "fingerprint": fp,
            "init_compressor": start}


def shipped_compressor(ndim: int, channels: int) -> tuple[dict, str | None]:
    """C's layout (widths, first stride, latent channels) as the default model of ``ndim``
    has it, the C measured best on the shipped tasks; and that model's name where a run of
    ``channels`` input channels can start from its C's weights, as a C trained long on many
    images is a better start for a small data set's run on a CPU than a random one (README:
    "What each lever gave")."""
    from .. import zoo
    model = zoo.default_for(ndim)
    arch = model.manifest.architecture
    layout = {"c_widths": list(arch.c_widths), "c_first_stride": arch.c_first_stride,
              "latent_channels": arch.latent_channels}
    return layout, model.name if arch.in_channels == channels else None

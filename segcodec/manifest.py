"""A model's manifest (format_spec.md §6): the one place its keys, their checks and what an
absent optional key means are written.

    manifest = Manifest.from_json(json.loads(text))   # SgcError if it is not a valid one
    manifest.architecture.work_shape, manifest.normalisation["kind"], manifest.to_json()

The loader reads a model file's manifest here, and ``zoo.write_model_file`` checks what it
writes the same way, so export never writes a file the loader refuses.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from . import domain as domains
from .architecture import Architecture
from .errors import SgcError

# What each normalisation kind reads (transforms.normalise, inputs.working_grid).
NORMALISATION_KEYS = {"fixed": ("scale", "mean", "std"), "zscore": (),
                      "ct": ("low", "high", "mean", "std")}


@dataclass(frozen=True)
class Manifest:
    name: str
    task: str
    labels: tuple[str, ...]  # one per class of s, background first
    normalisation: dict  # how intensities reach C: NORMALISATION_KEYS
    architecture: Architecture
    orientation: str | None = None  # §2.3: the axis codes volumes are coded in
    domain: dict | None = None  # what the training data looked like (segcodec.domain)
    default: bool = False  # the default of its dimensionality when it was exported
    training: dict = field(default_factory=dict)  # the recipe and scores: information only
    parameters: dict = field(default_factory=dict)  # C's, g's and s's sizes: information only

    @classmethod
    def from_json(cls, d, *, fresh: bool = False) -> Manifest:
        """The manifest a model file (or export) gives; SgcError, naming the key, unless it
        is a valid one.  ``fresh``: ``d`` was parsed for this manifest alone, so its dicts are
        kept instead of copied (a shipped model's domain is 124 kB of JSON: copying it took 9 ms
        of an encode, as long as loading the rest of the model)."""
        if not isinstance(d, dict):
            raise SgcError("manifest is not an object")
        known = {f.name for f in cls.__dataclass_fields__.values()}
        if unknown := sorted(set(d) - known):
            raise SgcError(f"manifest key {unknown[0]!r} is unknown")
        for key in ("name", "task", "labels", "normalisation", "architecture"):
            if key not in d:
                raise SgcError(f"manifest lacks {key!r}")
        arch = Architecture.from_json(d["architecture"])
        if not isinstance(d["name"], str) or not d["name"] or not isinstance(d["task"], str):
            raise SgcError("manifest name and task must be strings, the name not empty")
        labels = d["labels"]
        if not isinstance(labels, list) or len(labels) != arch.n_classes or \
                not all(isinstance(label, str) for label in labels):
            raise SgcError(f"manifest labels must be {arch.n_classes} names, one per class")
        _check_normalisation(d["normalisation"], arch.in_channels)
        orientation = d.get("orientation")
        if orientation is not None and (not isinstance(orientation, str) or
                                        len(orientation) != 3 or arch.ndim != 3):
            raise SgcError(f"manifest orientation {orientation!r} is not a 3D model's axis "
                           "codes")
        domains.validate(d.get("domain"), arch.to_json())
        for key in ("training", "parameters"):
            if not isinstance(d.get(key, {}), dict):
                raise SgcError(f"manifest {key} is not an object")
        if not isinstance(d.get("default", False), bool):
            raise SgcError("manifest default is not a boolean")
        own = (lambda value: value) if fresh else copy.deepcopy
        return cls(d["name"], d["task"], tuple(labels), own(d["normalisation"]), arch,
                   orientation, own(d.get("domain")), d.get("default", False),
                   own(d.get("training", {})), own(d.get("parameters", {})))

    def to_json(self) -> dict:
        """The manifest as a model file holds it: the optional keys only where set; a copy the
        caller may change."""
        d = {"name": self.name, "task": self.task, "labels": list(self.labels),
             "normalisation": self.normalisation, "architecture": self.architecture.to_json(),
             "default": self.default, "training": self.training,
             "parameters": self.parameters}
        if self.orientation is not None:
            d["orientation"] = self.orientation
        if self.domain is not None:
            d["domain"] = self.domain
        return copy.deepcopy(d)


def _check_normalisation(spec, channels: int) -> None:
    if not isinstance(spec, dict) or spec.get("kind") not in NORMALISATION_KEYS:
        raise SgcError(f"manifest normalisation kind must be one of "
                       f"{', '.join(NORMALISATION_KEYS)}")
    for key in NORMALISATION_KEYS[spec["kind"]]:
        values = spec.get(key)
        values = values if isinstance(values, list) and len(values) in (1, channels) \
            else [values]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            raise SgcError(f"manifest normalisation {key} must be finite numbers (one, or one "
                           f"per input channel)")
        if key == "std" and not all(v > 0 for v in values):
            raise SgcError("manifest normalisation std must be positive")

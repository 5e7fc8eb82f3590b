"""Training configurations: the paper's designs D1-D4 and the two references, per task.

A config is a ``Recipe``: a frozen dataclass with every training setting as a typed field.
``resolve()`` gives all of them as plain JSON values, which every run saves (config.json and
the checkpoint) and resumes only under; ``Recipe.load`` reads such a dict back, one written by
an earlier version included.  ``config(name)`` builds the named recipe, e.g. ``isic-d4`` or
``hippocampus-seg``; a JSON file with the same keys works too.  Designs (Liu et al. 2020,
Fig. 3a):

- ``seg``: the segmentor alone on uncompressed images (the reference for other codecs);
- ``d1``: segmentor + discriminator D, no compression;
- ``d2``: compressor C + g + s;  ``d3``: + D;  ``d4``: + rate loss (the shipped recipe);
- ``autoseg``: C + an image decoder trained on pixel MSE; its reconstruction is segmented by
  the task's ``seg`` model.

The uncompressed ``seg`` run is the teacher of every compressed design: g's feature map has
the image's channel count, s starts from the trained ``seg`` run (``init_segmentor``), and s on
g(latents) is distilled towards ``seg`` on the image (``distil_weight``,
``losses.loss_distil``).  Every run scores a validation split carved from the training cases
and keeps its best weights (``loop.train``); the test cases are never seen.

``-rN`` after ``d4`` picks rate point N: ``d4`` fine-tuned for an eighth of its steps (or the
task's ``rate_point`` steps) with the weight of ``loss_cr`` times 3**(N-1) (a curve costs a
fraction of training each point anew), its weights picked from the second half.

The v3 recipes are those of the runs trained on one H100 (``tools/gpu``): larger batches,
affine augmentation (``loop.augment``) where it won on the validation split, and the steps
that each run's time budget bought there (the ISIC and hippocampus references were stopped by
their budget at 7,451 and 2,761 of these steps; their validation picks came earlier).  On the
2 CPU cores here they take hours.  The v2 recipes (CPU, batch 16/8, flips only) are in git
history at e1fb966, v1 at 12d0a40.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

TASKS = {
    "isic": {
        "task": "ISIC 2017 skin lesion segmentation (dermoscopy, RGB)",
        "labels": ["background", "lesion"],
        "arch": {"ndim": 2, "in_channels": 3, "latent_channels": 4, "c_widths": [16, 32, 48],
                 "g_widths": [32, 16, 8], "g_channels": 3, "s_widths": [16, 32, 64, 128],
                 "s_norm": True, "n_classes": 2, "work_shape": [64, 64]},
        "critic_widths": [32, 64, 128],
        "batch": 32, "lr": 2e-3, "steps": {"seg": 8106, "other": 1924},
        "rate_weight": 0.2,
        # Validation Dice of the references: 0.894 with flips, 0.891 with affine; of D4
        # taught by the first: 0.865 with flips, 0.872 with affine.
        "augment": {"seg": "flips", "other": "affine"},
        # The uncompressed s reached val Dice 0.835 on Eq. 2's MSE alone, 0.825 with the
        # soft-Dice term the other designs were trained with.
        "seg_dice_weight": 0.0,
    },
    "hippocampus": {
        "task": "MSD Task04 hippocampus segmentation (T1 MRI)",
        "labels": ["background", "anterior hippocampus", "posterior hippocampus"],
        "normalisation": {"kind": "zscore"},
        # Every MSD volume is RAS+ with an identity affine; exported models ask encode to
        # bring other orientations there (format_spec.md §2.3).
        "orientation": "RAS",
        "arch": {"ndim": 3, "in_channels": 1, "latent_channels": 2, "c_widths": [8, 16, 24],
                 "g_widths": [32, 16, 8], "s_widths": [8, 16, 32], "s_norm": True,
                 "n_classes": 3, "work_shape": [32, 48, 32]},
        "critic_widths": [16, 32],
        # Rate points: the 242 steps that hippocampus-v3's fine-tune's budget bought.
        "batch": 16, "lr": 2e-3, "steps": {"seg": 4667, "other": 1642, "rate_point": 242},
        "rate_weight": 0.1,
        # Validation mean Dice of the references: 0.860 with flips, 0.876 with affine; of D4:
        # 0.833 and 0.847.
        "augment": {"seg": "affine", "other": "affine"},
    },
}

DESIGNS = {
    "seg": {"compress": False, "critic": False, "rate": False},
    "d1": {"compress": False, "critic": True, "rate": False},
    "d2": {"compress": True, "critic": False, "rate": False},
    "d3": {"compress": True, "critic": True, "rate": False},
    "d4": {"compress": True, "critic": True, "rate": True},
    "autoseg": {"compress": True, "critic": False, "rate": False, "target": "image"},
}

_NAME = re.compile(r"^(?P<task>[a-z]+)-(?P<design>seg|d[1-4]|autoseg)(?:-r(?P<point>[0-9]))?$")

TARGETS = ("labels", "image")  # what the decoder is trained to give: label maps, or autoseg's image
AUGMENTATIONS = ("flips", "affine")  # loop.augment's kinds
# The arithmetic of a training step's forward passes: float32, or bfloat16 autocast (the
# optimiser's weights and steps stay float32), which CPUs with AVX512-BF16 run much faster.
PRECISIONS = ("fp32", "bf16")
# Keys the first version wrote that nothing reads any more: dropped when a config is loaded.
RETIRED = ("critic_clip",)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Everything a training run is configured by.

    Fields without a default were in every config ever written.  The defaults of the others
    are what configs written before the field existed meant, so that ``Recipe.load`` reads old
    run folders as they ran; recipes built today set every field.  Change one with
    ``dataclasses.replace``, which validates the result as construction does.
    """

    # The run and its task
    name: str
    task_key: str  # the task's data: ``data.task_pairs`` finds its cases by it
    design: str  # a key of DESIGNS
    task: str  # what the exported model says it segments
    labels: list[str]
    fingerprint: dict | None = None  # what a planned task was derived from (``plan``)
    # The model: ``networks`` reads ``arch``; export writes all three into the manifest
    arch: dict
    normalisation: dict | None  # None: photographs' statistics, measured when a run starts
    orientation: str | None = None  # axis codes volumes are brought to (Recipe.load: the task's)
    # The networks trained and the losses' weights
    compress: bool  # C and g before s, or s on the image
    target: str  # one of TARGETS
    critic_widths: list[int]  # D's layers (Recipe.load: the task's)
    dis_weight: float
    rate_weight: float
    rate_ramp: float  # the fraction of the steps over which the rate loss ramps in
    dice_weight: float
    distil_weight: float = 0.0
    # The optimisation
    batch: int
    lr: float
    steps: int
    seed: int
    augment: str = "flips"  # one of AUGMENTATIONS
    precision: str = "fp32"  # one of PRECISIONS
    # The fraction of the steps from which weights are picked; None: where the rate ramp ends.
    select_from: float | None = None
    # Parent runs: recipe names, or checkpoint paths once a run resolves them (``run.prepare``)
    init: str | None = None  # a d4 run whose weights a rate point fine-tunes
    init_segmentor: str | None = None  # a seg run whose s this run starts from
    teacher: str | None = None  # a seg run whose s on the image teaches s on g(latents)
    # A model (name, id or .sgm file) whose C this run's C starts from: one trained long on
    # another task's images, for a data set too small or a machine too slow to learn C anew.
    init_compressor: str | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value, hint = getattr(self, field.name), _HINTS[field.name]
            if not _conforms(value, hint):
                wanted = hint.__name__ if isinstance(hint, type) else str(hint)
                raise ValueError(f"config key {field.name!r}: {value!r} is not {wanted}")
        for key, ok, wanted in (
                ("design", self.design in DESIGNS, "one of " + ", ".join(DESIGNS)),
                ("target", self.target in TARGETS, "one of " + ", ".join(TARGETS)),
                ("augment", self.augment in AUGMENTATIONS, "one of " + ", ".join(AUGMENTATIONS)),
                ("precision", self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
                ("steps", self.steps >= 1, "at least 1"),
                ("batch", self.batch >= 1, "at least 1"),
                ("lr", self.lr >= 0, "at least 0"),
                ("dis_weight", self.dis_weight >= 0, "at least 0"),
                ("rate_weight", self.rate_weight >= 0, "at least 0"),
                ("dice_weight", self.dice_weight >= 0, "at least 0"),
                ("distil_weight", self.distil_weight >= 0, "at least 0"),
                ("rate_ramp", 0 <= self.rate_ramp <= 1, "within 0 and 1"),
                ("select_from", self.select_from is None or 0 <= self.select_from <= 1,
                 "within 0 and 1")):
            if not ok:
                raise ValueError(f"config key {key!r}: {getattr(self, key)!r} is not {wanted}")

    def resolve(self) -> dict:
        """The complete config: every field, defaults included, as plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, config: dict) -> Recipe:
        """A config as ``resolve`` gives it, or as an earlier version wrote it (config.json, a
        checkpoint's, a JSON file): a key it lacks takes what its absence meant then.
        ValueError, naming the key, for an unknown, missing or ill-typed one."""
        if not isinstance(config, dict):
            raise ValueError(f"a config is a JSON object, not {type(config).__name__}")
        known = [field.name for field in dataclasses.fields(cls)]
        for key in config:
            if key not in known and key not in RETIRED:
                close = difflib.get_close_matches(key, known, 1)
                raise ValueError(f"unknown config key {key!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else ""))
        given = {k: v for k, v in config.items() if k not in RETIRED}
        # Configs written before these keys existed ran with the shipped task's values.
        task = TASKS.get(str(given.get("task_key")), {})  # str: an ill-typed one fails below
        for key in ("orientation", "critic_widths"):
            if key not in given and key in task:
                given[key] = task[key]
        for field in dataclasses.fields(cls):
            if field.name not in given and field.default is dataclasses.MISSING:
                raise ValueError(f"config key {field.name!r} missing")
        return cls(**given)


_HINTS = typing.get_type_hints(Recipe)


def _conforms(value, hint) -> bool:
    """Whether ``value``, as JSON gives it, is of the field type ``hint``."""
    if isinstance(hint, types.UnionType):
        return any(_conforms(value, option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if isinstance(value, bool):  # True is an int to Python, not to a config
        return hint is bool
    if hint is float:  # JSON writes 1.0 as 1 where a person typed it
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def names() -> list[str]:
    out = [f"{t}-{d}" for t in TASKS for d in DESIGNS]
    return out + [f"{t}-d4-r{n}" for t in TASKS for n in (0, 2, 3)]


def config(name_or_path: str) -> Recipe:
    """The named recipe, or a JSON config file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return Recipe.load(json.loads(path.read_text()))
    m = _NAME.match(name_or_path)
    if not m or m["task"] not in TASKS or (m["point"] and m["design"] != "d4"):
        raise ValueError(f"unknown training config {name_or_path!r}; "
                         f"known: {', '.join(names())} or a .json file")
    return build(m["task"], TASKS[m["task"]], m["design"],
                 int(m["point"]) if m["point"] is not None else 1)


def for_dataset(root, design: str = "d4", point: int = 1) -> Recipe:
    """The recipe of ``design`` (and rate point) for the data set folder ``root``, planned
    from its fingerprint (``plan``)."""
    from .. import datasets
    from . import plan
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; known: {', '.join(DESIGNS)}")
    if point != 1 and design != "d4":
        raise ValueError("rate points are points of design d4")
    fp = plan.fingerprint(datasets.open(root))
    key = plan.task_key(fp["name"])
    if key in TASKS:  # a shipped task's key would give its run names and validation split
        key += "own"
    return build(key, plan.task(fp), design, point)


def build(key: str, task: dict, design_name: str, point: int = 1) -> Recipe:
    """The config of ``design_name`` at rate point ``point`` for the task entry ``task``
    (``TASKS[key]``, or one planned for a data set)."""
    design = DESIGNS[design_name]
    # s starts from the uncompressed segmentor, which also teaches it: from scratch, 800 CPU
    # steps left v1's hippocampus D4 at mean Dice 0.776 against the reference's 0.876.
    taught = design["compress"] and "target" not in design
    steps = task["steps"]["seg" if design_name == "seg" else "other"]
    recipe = Recipe(
        name=f"{key}-{design_name}" + (f"-r{point}" if point != 1 else ""),
        task_key=key, design=design_name, task=task["task"], labels=list(task["labels"]),
        fingerprint=task.get("fingerprint"),
        arch=dict(task["arch"]), normalisation=task.get("normalisation"),
        orientation=task.get("orientation"),
        compress=design["compress"], target=design.get("target", "labels"),
        critic_widths=list(task["critic_widths"]),
        dis_weight=0.1 if design["critic"] else 0.0,
        rate_weight=task["rate_weight"] * 3 ** (point - 1) if design["rate"] else 0.0,
        # The rate loss ramps in over the first half so latents carry information first.
        rate_ramp=0.5,
        dice_weight=task.get("seg_dice_weight", 1.0) if design_name == "seg" else 1.0,
        distil_weight=1.0 if taught else 0.0,
        batch=task["batch"], lr=task["lr"], steps=steps, seed=0,
        augment=task["augment"]["seg" if design_name == "seg" else "other"],
        init_segmentor=f"{key}-seg" if taught else None,
        teacher=f"{key}-seg" if taught else None,
        init_compressor=task.get("init_compressor") if design["compress"] else None)
    if point != 1:
        # Picked from the second half: the first steps still code at the parent's rate.
        recipe = dataclasses.replace(
            recipe, init=f"{key}-d4", steps=task["steps"].get("rate_point", steps // 8),
            lr=task["lr"] / 4, rate_ramp=0.0, select_from=0.5)
    return recipe

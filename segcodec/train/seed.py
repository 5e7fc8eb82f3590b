"""Training runs seeded from shipped networks: fine-tune a model whose runs are not at hand.

    python -m segcodec.train.seed isic-lesion-v4 --teacher bench/references/isic-seg.safetensors \\
        --runs runs --rate-divisors 3 9
    segcodec train runs/isic-d4-div3.json --data ../shared/data --out runs/isic-d4-div3

A rate point (``recipes``: ``-rN``) fine-tunes a D4 run's checkpoint (``init``) under the
task's ``seg`` run as teacher; a released model ships neither, only its exported model file
(C, g, s, integer tables) and the reference segmentor (``bench/references/``). This writes
the two checkpoints the loop reads from them, under the names a recipe's parents resolve to
(``runs/<task>-d4/``, ``runs/<task>-seg/``):

- the D4 parent: the model's C, g and s as ``net``; as ``rate``, the model's tables as the
  counts of the loop's running estimate (``losses.ContextRate``) at the weight its decay
  gives them with the recipe's batch, so the rate loss starts at the model's own
  probabilities; no ``critic``: the fine-tune starts D afresh. Its config is the task's D4
  recipe with the model's architecture and normalisation, so ``segcodec export`` of it gives
  the model's networks back.
- the teacher: the reference's s, with the training config its file carries.

With ``--rate-divisors``, it also writes the configs of rate points that fine-tune them
(``runs/<task>-d4-div<N>.json``): the task's rate-point recipe (an eighth of D4's steps at a
quarter of its learning rate, weights picked from the second half) at the D4 rate weight
divided by N, with the model's architecture and normalisation (the named ``-rN`` recipes
build the recipe's own architecture, which a distilled model such as ``isic-lesion-v4``,
with its narrower g, does not have).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .. import bits, entropy, zoo
from ..errors import SgcError
from ..networks import downsample
from . import loop, recipes
from .losses import ContextRate
from ..manifest import Manifest


def task_key(manifest: Manifest) -> str:
    """The shipped task (``recipes.TASKS``) a model was trained for, by its manifest's task."""
    for key, task in recipes.TASKS.items():
        if task["task"] == manifest.task:
            return key
    raise ValueError(f"model {manifest.name!r} is not of a shipped task "
                     f"({', '.join(recipes.TASKS)}): {manifest.task!r}")


def rate_counts(table: np.ndarray, arch: dict, batch: int, decay: float) -> dict:
    """``ContextRate``'s buffers holding the integer ``table``'s probabilities, each context
    counted as often as the running average over batches of ``batch`` holds on average."""
    n_ctx = bits.n_contexts(arch["latent_channels"], arch["ndim"])
    latent = arch["latent_channels"] * int(np.prod(
        [s // downsample(arch) for s in arch["work_shape"]]))
    total = batch * latent / n_ctx / (1 - decay)
    p = torch.as_tensor(table, dtype=torch.float64) / entropy.ONE
    return {"ones": (p * (total + 1) - 0.5).float(), "total": torch.full((n_ctx,), total)}


def parent_checkpoint(model: zoo.Model) -> dict:
    """The D4 checkpoint of ``model``'s networks (see the module's docstring)."""
    manifest = model.manifest
    cfg = recipes.config(f"{task_key(manifest)}-d4")
    cfg = dataclasses.replace(cfg, name=manifest.name, arch=manifest.architecture.to_json(),
                              normalisation=manifest.normalisation,
                              init_segmentor=None, teacher=None)
    net = loop.build_net(cfg)
    net.load_state_dict(model.net.state_dict())
    rate = ContextRate(cfg.arch["latent_channels"], cfg.arch["ndim"])
    rate.load_state_dict(rate_counts(model.table, cfg.arch, cfg.batch, rate.decay))
    training = manifest.training
    return {"net": net.state_dict(), "rate": rate.state_dict(), "config": cfg.resolve(),
            "step": training.get("steps", 0), "elapsed": float(training.get("train_seconds", 0)),
            "hardware": f"seeded from model {manifest.name} ({model.model_id.hex()})"}


def teacher_checkpoint(reference: Path) -> dict:
    """The ``seg`` checkpoint of a reference segmentor file (``bench/references/``)."""
    with safe_open(str(reference), "pt") as f:
        config = json.loads(f.metadata()["config"])
    net = loop.build_net(recipes.Recipe.load(config))
    net.load_state_dict(load_file(str(reference)))
    return {"net": net.state_dict(), "config": config, "step": 0, "elapsed": 0.0}


def rate_point(parent: dict, divisor: float, init: Path, teacher: Path) -> recipes.Recipe:
    """The rate point fine-tuning the D4 checkpoint ``parent`` at its rate weight / divisor."""
    cfg = recipes.Recipe.load(parent["config"])
    point = recipes.build(cfg.task_key, recipes.TASKS[cfg.task_key], "d4", point=0)
    return dataclasses.replace(point, name=f"{cfg.task_key}-d4-div{divisor:g}", arch=cfg.arch,
                               normalisation=cfg.normalisation,
                               rate_weight=cfg.rate_weight / divisor, init=str(init),
                               init_segmentor=None, teacher=str(teacher))


def seed(model: str | Path, runs: Path, teacher: Path | None = None,
         divisors: tuple[float, ...] = ()) -> dict[str, Path]:
    """Write ``runs/<task>-d4/checkpoint.pt`` from ``model`` (an installed model's name or id,
    or a .sgm path) and, with ``teacher``, ``runs/<task>-seg/checkpoint.pt`` from that
    reference segmentor file, and the configs of rate points at the D4 rate weight divided by
    each of ``divisors`` (these need ``teacher``). An existing file is never overwritten
    (FileExistsError)."""
    found = zoo.load_file(Path(model)) if str(model).endswith(zoo.SUFFIX) else zoo.find(model)
    key = task_key(found.manifest)
    if divisors and teacher is None:
        raise ValueError("a rate point needs its teacher: give the reference segmentor")
    made = {"init": (runs / f"{key}-d4" / "checkpoint.pt", lambda: parent_checkpoint(found))}
    if teacher is not None:
        made["teacher"] = (runs / f"{key}-seg" / "checkpoint.pt",
                           lambda: teacher_checkpoint(teacher))
    configs = {f"div{n:g}": runs / f"{key}-d4-div{n:g}.json" for n in divisors}
    for path in [p for p, _ in made.values()] + list(configs.values()):
        if path.exists():
            raise FileExistsError(f"{path} exists; seed into another --runs folder")
    for path, make in made.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ck := make(), path)
        if path == made["init"][0]:
            parent = ck
    for n, path in zip(divisors, configs.values()):
        cfg = rate_point(parent, n, made["init"][0], made["teacher"][0])
        path.write_text(json.dumps(cfg.resolve(), indent=1) + "\n")
    return {role: path for role, (path, _) in made.items()} | configs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m segcodec.train.seed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an installed model's name or id, or a .sgm file")
    ap.add_argument("--teacher", type=Path,
                    help="a reference segmentor file, e.g. bench/references/isic-seg.safetensors")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="where the run folders go")
    ap.add_argument("--rate-divisors", type=float, nargs="*", default=(),
                    help="write rate points' configs at the D4 rate weight divided by these")
    args = ap.parse_args(argv)
    try:
        written = seed(args.model, args.runs, args.teacher, tuple(args.rate_divisors))
    except (SgcError, ValueError, OSError, KeyError) as exc:
        sys.exit(f"seed: error: {exc}")
    print(json.dumps({role: str(path) for role, path in written.items()}))


if __name__ == "__main__":
    main()

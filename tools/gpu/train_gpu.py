"""Train the v3 runs on one GPU in a fixed wall-clock budget, several runs side by side.

    python tools/gpu/pack.py --data ../shared/data --out .gpu       # here: the data sets
    python tools/gpu/train_gpu.py --packs .gpu --out OUT --deadline-s 540   # on the GPU
    python tools/gpu/train_gpu.py --packs .gpu --out OUT --long 220         # longer D4s
    python tools/gpu/train_gpu.py --packs .gpu --out OUT --plan tools/gpu/plans/fast-c-1.json

The GPU machine gets the repository, ``.gpu`` (the packs; for ``--long`` and ``--plan`` also
``teachers/NAME/checkpoint.pt``) and zstandard and constriction wheels; it has torch, numpy
and numba.

Phase 1 trains the uncompressed references (each task with flips only and with affine
augmentation); the better one on the carved validation split becomes the teacher. Phase 2
trains D4 from it (both augmentations), phase 3 the rate points from the better D4. Each run
sizes its steps to its time budget from its own measured speed. Per phase, OUT gets
phaseN.tar: per run, a checkpoint with the validation pick's weights (no optimiser state),
log.csv, val.csv.

A plan (``--plan``) names chains of runs, run side by side: per chain an architecture change,
a seed, the teacher (in the packs' ``teachers/``), an optional parent checkpoint (a path in
the packs), and its phases ``[recipe, name suffix, budget in s or null, config changes]``,
each starting from the one before.  A null budget runs the ``steps`` the changes give.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
PACKS = Path(".gpu")  # set from --packs; the worker processes get it in their spec

GPU_BATCH = {"isic": 32, "hippocampus": 16}


def load_pack(task: str):
    import numpy as np
    import torch
    import zstandard
    from pack import normalised
    raw = zstandard.ZstdDecompressor().decompress((PACKS / f"{task}.npz.zst").read_bytes(),
                                                  max_output_size=1 << 30)
    pack = np.load(io.BytesIO(raw))
    norm = json.loads(str(pack["normalisation"]))
    sets = {}
    for split in ("fit", "val"):
        if norm["kind"] == "fixed":
            x = normalised(torch.from_numpy(pack[f"{split}_x_u8"]), norm)
        else:
            x = torch.from_numpy(pack[f"{split}_x_f16"]).float()
        fg = torch.from_numpy(pack[f"{split}_t_u8"]).float() / 255
        t = torch.cat([(1 - fg.sum(1, keepdim=True)).clamp(min=0), fg], 1)
        sets[split] = (x, t)
    labels, at = [], 0
    for shape in pack["val_shapes"]:
        n = int(np.prod(shape))
        labels.append(pack["val_labels"][at:at + n].reshape(tuple(int(s) for s in shape)))
        at += n
    return norm, sets["fit"], (sets["val"][0], labels)


def worker(spec: dict) -> None:
    """One run: calibrate the step rate, size the run to its budget (unless its steps are
    given: ``budget_s`` None), train, strip."""
    import torch
    from segcodec.train import loop
    from segcodec.train.recipes import Recipe
    t_start = time.time()
    torch.backends.cudnn.benchmark = True
    cfg, out, budget = Recipe.load(spec["cfg"]), Path(spec["out"]), spec["budget_s"]
    norm, (x, t), val = load_pack(cfg.task_key)
    cfg = dataclasses.replace(cfg, normalisation=norm)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rate, hard_stop = float("nan"), float("inf")
    if budget is not None:
        # Calibration: a short throwaway run of the same config, timed after its warm-up.
        marks = {}

        def mark(step, total):
            marks[step] = time.time()

        probe = dataclasses.replace(cfg, steps=60)
        loop.train(probe, x, t, out.parent / (out.name + "-probe"), val=None, device=dev,
                   progress=mark, save_every_s=1e9)
        rate = 40 / (marks[60] - marks[20])
        t0 = time.time()
        net = loop.build_net(cfg).to(dev)
        loop.evaluate(net, val[0].to(dev), val[1], cfg.arch["n_classes"])
        val_s = time.time() - t0
        left = budget - (time.time() - t_start)
        steps = max(50, int((left - 20 * val_s) * rate * 0.8))
        cfg = dataclasses.replace(cfg, steps=steps)
        print(f"{out.name}: {rate:.1f} steps/s, validation {val_s:.2f} s, {left:.0f} s left "
              f"-> {steps} steps", flush=True)
        hard_stop = t_start + budget + 25

    def guard(step, total):
        if time.time() > hard_stop:
            print(f"{out.name}: over budget at step {step}/{total}; stopping", flush=True)
            raise KeyboardInterrupt

    try:
        loop.train(cfg, x, t, out, val=val, device=dev, progress=guard, save_every_s=60)
    except KeyboardInterrupt:
        pass
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    best = ck.get("best") or {"step": ck["step"], "val_dice": float("nan"), "net": ck["net"]}
    slim = {k: ck[k] for k in ("config", "rate", "critic", "step", "elapsed") if k in ck}
    speed = "" if budget is None else f"{rate:.1f} steps/s measured "
    slim.update(net=best["net"], best=best, hardware="NVIDIA H100 (device tool), "
                f"{speed}with the phase's runs side by side")
    torch.save(slim, out / "checkpoint.pt")
    summary = {"run": out.name, "steps": ck["step"], "of": cfg.steps,
               "seconds": round(ck["elapsed"]), "picked_step": best["step"],
               "val_dice": best["val_dice"], "val_bpp_estimate_last": _last_val_bpp(out)}
    (out / "summary.json").write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary), flush=True)


def _last_val_bpp(out: Path):
    import csv
    rows = list(csv.DictReader(open(out / "val.csv")))
    return float(rows[-1]["val_bpp_estimate"]) if rows else None


def phase(n: int, chains: list[list[dict]], runs: Path, out: Path) -> dict:
    """Run the chains side by side, each in a process of its own (a chain's runs one after
    another: each starts from the one before); OUT/phaseN.tar gets every run's files."""
    procs = []
    for chain in chains:
        path = runs / f"{chain[0]['name']}.json"
        path.write_text(json.dumps(chain))
        log = open(runs / f"{chain[0]['name']}.log", "w")
        procs.append((chain, log, subprocess.Popen(
            [sys.executable, __file__, "--packs", str(PACKS), "--one", str(path)],
            stdout=log, stderr=subprocess.STDOUT)))
    results = {}
    for chain, log, proc in procs:
        proc.wait()
        log.close()
        text = (runs / f"{chain[0]['name']}.log").read_text()
        print(f"--- {chain[0]['name']} (rc {proc.returncode})\n" + text[-1500:], flush=True)
        for spec in chain:
            summary = runs / spec["name"] / "summary.json"
            if summary.exists():
                results[spec["name"]] = json.loads(summary.read_text())
    with tarfile.open(out / f"phase{n}.tar", "w") as tar:
        for chain in chains:
            for spec in chain:
                run = runs / spec["name"]
                for f in ("checkpoint.pt", "log.csv", "val.csv", "config.json", "summary.json"):
                    if (run / f).exists():
                        tar.add(run / f, arcname=f"{spec['name']}/{f}")
            tar.add(runs / f"{chain[0]['name']}.log", arcname=f"{chain[0]['name']}/stdout.log")
    return results


def run_spec(recipe: str, name: str, budget: float | None, runs: Path, parents: dict,
             **changes) -> dict:
    """One run's spec: ``recipe`` with ``changes`` at the GPU's batch, its parents (``init``,
    ``init_segmentor``, ``teacher``) given as checkpoint paths.  A run with an ``init`` takes
    s from it, with the rest, so not from ``init_segmentor``."""
    from segcodec.train import recipes
    cfg = recipes.config(recipe)
    cfg = dataclasses.replace(cfg, name=name, batch=GPU_BATCH[cfg.task_key], **changes,
                              **parents)
    if cfg.init:
        cfg = dataclasses.replace(cfg, init_segmentor=None)
    return {"name": name, "cfg": cfg.resolve(), "out": str(runs / name), "budget_s": budget}


def plan_chains(plan: dict, runs: Path) -> list[list[dict]]:
    """A ``--plan``'s chains: per chain, the specs of its runs in order (see the module's
    docstring); a run's parent is the run before it, the first's the chain's ``init`` or,
    without one, the teacher's s."""
    from segcodec.train import recipes
    chains = []
    for name, variant in plan.items():
        teacher = str(PACKS / "teachers" / variant["teacher"] / "checkpoint.pt")
        parent = str(PACKS / variant["init"]) if variant.get("init") else None
        chain = []
        for recipe, suffix, budget, changes in variant["phases"]:
            arch = dict(recipes.config(recipe).arch, **variant["arch"])
            chain.append(run_spec(recipe, name + suffix, budget, runs,
                                  {"init": parent, "init_segmentor": teacher, "teacher": teacher},
                                  arch=arch, seed=variant.get("seed", 0), **changes))
            parent = str(runs / chain[-1]["name"] / "checkpoint.pt")
        chains.append(chain)
    return chains


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--packs", type=Path, default=Path(".gpu"), help="tools/gpu/pack.py's --out")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/runs"))
    ap.add_argument("--deadline-s", type=float, default=470)
    ap.add_argument("--scale", type=float, default=1.0, help="all budgets x this (tests)")
    ap.add_argument("--tasks", default="isic,hippocampus")
    ap.add_argument("--augs", default="flips,affine")
    ap.add_argument("--long", type=float, help="only D4 from .gpu/teachers, this budget (s)")
    ap.add_argument("--plan", type=Path, help="only the chains of runs this JSON names "
                    "(tools/gpu/plans/)")
    ap.add_argument("--one", type=Path)
    args = ap.parse_args()
    global PACKS
    PACKS = args.packs.resolve()
    if args.one:
        for spec in json.loads(args.one.read_text()):
            worker(spec)
        return
    from segcodec.train import recipes
    t_start = time.time()
    runs, out = args.runs, args.out
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    budgets = [165 * args.scale, 185 * args.scale, 75 * args.scale]

    def spec(name, recipe, budget, **changes):
        # ``_init`` etc. name the parent run in place of the recipe's
        named = {k[1:]: changes.pop(k) for k in list(changes) if k.startswith("_")}
        cfg = recipes.config(recipe)
        return run_spec(recipe, name, budget, runs, {
            key: str(runs / named.get(key, getattr(cfg, key)) / "checkpoint.pt")
            for key in ("init", "init_segmentor", "teacher") if getattr(cfg, key)}, **changes)

    if args.plan:
        chains = plan_chains(json.loads(args.plan.read_text()), runs)
        print("plan", json.dumps(phase(5, chains, runs, out)), flush=True)
        return
    tasks, augs = args.tasks.split(","), args.augs.split(",")
    if args.long:
        import shutil
        teacher = {"isic": "isic-seg", "hippocampus": "hippocampus-seg-aff"}
        for name in teacher.values():
            (runs / name).mkdir(exist_ok=True)
            shutil.copy(PACKS / "teachers" / name / "checkpoint.pt", runs / name)
        p = [spec("isic-d4-aff-long", "isic-d4", args.long, augment="affine",
                  _init_segmentor=teacher["isic"], _teacher=teacher["isic"]),
             spec("hippocampus-d4-aff-long", "hippocampus-d4", args.long, augment="affine",
                  _init_segmentor=teacher["hippocampus"], _teacher=teacher["hippocampus"]),
             spec("hippocampus-d4-aff-long-s1", "hippocampus-d4", args.long, augment="affine",
                  seed=1, _init_segmentor=teacher["hippocampus"],
                  _teacher=teacher["hippocampus"])]
        print("long", json.dumps(phase(4, [[x] for x in p], runs, out)), flush=True)
        return
    p1 = [spec(f"{t}-seg{'-aff' if a == 'affine' else ''}", f"{t}-seg", budgets[0], augment=a)
          for t in tasks for a in augs]
    r1 = phase(1, [[x] for x in p1], runs, out)
    print("phase 1", json.dumps(r1), f"{time.time() - t_start:.0f} s", flush=True)
    teacher = {}
    for t in tasks:
        done = {k: v for k, v in r1.items() if k.startswith(f"{t}-seg")}
        if not done:
            continue
        teacher[t] = max(done, key=lambda k: done[k]["val_dice"])
    p2 = []
    for t in teacher:
        for a in augs:
            p2.append(spec(f"{t}-d4{'-aff' if a == 'affine' else ''}", f"{t}-d4", budgets[1],
                           augment=a, _init_segmentor=teacher[t], _teacher=teacher[t]))
    r2 = phase(2, [[x] for x in p2], runs, out)
    print("phase 2", json.dumps(r2), f"{time.time() - t_start:.0f} s", flush=True)
    left = args.deadline_s - (time.time() - t_start) - 15
    budget3 = max(30 * args.scale, min(budgets[2], left))
    p3 = []
    for t in tasks:
        done = {k: v for k, v in r2.items() if k.startswith(f"{t}-d4")}
        if not done:
            continue
        parent = max(done, key=lambda k: done[k]["val_dice"])
        aug = "affine" if parent.endswith("-aff") else "flips"
        for point in (2, 3, 4):
            p3.append(spec(f"{parent}-r{point}", f"{t}-d4-r{point}", budget3, augment=aug,
                           _init=parent, _teacher=teacher[t]))
    r3 = phase(3, [[x] for x in p3], runs, out)
    print("phase 3", json.dumps(r3), f"{time.time() - t_start:.0f} s", flush=True)
    (out / "summary.json").write_text(json.dumps({"teacher": teacher, "phase1": r1, "phase2": r2,
                                                 "phase3": r3}, indent=1) + "\n")


if __name__ == "__main__":
    main()

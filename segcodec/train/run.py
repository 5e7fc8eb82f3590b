"""One training run from Python, as ``segcodec train`` does it, and the shipped models' recipes.

    from segcodec.train import run
    run.run(None, data="Task09_Spleen", design="seg")   # any data set folder: planned
    run.run(None, data="Task09_Spleen")                  # D4, taught by the seg run
    summary = run.run("isic-d4", data="../shared/data", out="runs/isic-d4")
    run.reproduce("isic", data="../shared/data")   # the shipped isic models, end to end
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path


from ..api import resolve_device
from . import data as training_data
from . import budget, export, loop, recipes

__all__ = ["DEFAULT_CACHE", "run", "within", "reproduce"]

DEFAULT_CACHE = Path.home() / ".cache" / "segcodec"

# name -> (recipe, default for its kind): what ``reproduce`` trains and exports, in order.
SHIPPED = {
    # Trained on an H100 (tools/gpu) and chosen on the validation split: the highest Dice whose
    # validation rate is within 97% of the target (0.009, 0.025 bpp), the margin that v2's
    # test rate kept over its validation rate.  isic-lesion-v3.1 is v3's export with the
    # appearance domain (the same networks and tables).  They are the parents of today's
    # defaults (isic-lesion-v4, hippocampus-v5), whose lighten and distil steps (README: "The
    # recipe") are not plans here: exported, they are not made the defaults.
    "isic": {"isic-lesion-v3.1": ("isic-d4", False)},
    "hippocampus": {"hippocampus-v3": ("hippocampus-d4-r2", False)},
}
DEFAULTS_NOT_REBUILT = {"isic": "isic-lesion-v4", "hippocampus": "hippocampus-v5"}


def recipe_for(config: str | None, data: Path, design: str = "d4",
               point: int = 1) -> recipes.Recipe:
    """A named recipe or JSON config; without one, ``design`` planned for the data set."""
    if config is None:
        return recipes.for_dataset(data, design, point)
    if design != "d4" or point != 1:
        raise ValueError("a design or rate point is chosen by the recipe's name "
                         f"({config!r}) or, without a name, by --design/--rate-point")
    return recipes.config(config)


def prepare(cfg: recipes.Recipe, out: Path, steps: int | None = None, seed: int | None = None,
            batch: int | None = None, teacher: Path | None = None,
            parent: Path | None = None, precision: str | None = None) -> recipes.Recipe:
    """The recipe as it runs in ``out``: with the overrides, and parent runs (``init``,
    ``init_segmentor``, ``teacher``) as checkpoint paths: ``teacher`` (a seg run's folder or
    checkpoint) and ``parent`` (a d4 run's, for a rate point) where given, else the runs
    of the recipes they name beside ``out``."""
    changes = {}
    if steps is not None:  # 0 is refused by the recipe, not taken for "the recipe's own"
        changes["steps"] = steps
    if batch:
        changes["batch"] = batch
    if seed is not None:
        changes["seed"] = seed
    if precision is not None:
        changes["precision"] = precision
    for given, keys, what in ((teacher, ("init_segmentor", "teacher"), "teacher"),
                              (parent, ("init",), "parent")):
        if given is None:
            continue
        if not any(getattr(cfg, key) for key in keys):
            raise ValueError(f"{cfg.name} takes no {what} run")
        given = Path(given) / "checkpoint.pt" if Path(given).is_dir() else Path(given)
        changes.update({key: str(given) for key in keys if getattr(cfg, key)})
    if cfg.init:
        changes["init_segmentor"] = None  # the parent run already holds a trained s
    resuming = (out / "checkpoint.pt").exists()
    for key in ("init", "init_segmentor", "teacher"):
        parent = changes.get(key, getattr(cfg, key))
        if parent and not Path(parent).suffix:  # a recipe name: its run beside ours
            parent = changes[key] = str(out.parent / parent / "checkpoint.pt")
        if parent and not resuming and not Path(parent).exists():
            design, option = ("d4", "--parent") if key == "init" else ("seg", "--teacher")
            raise ValueError(f"{cfg.name} starts from {parent}: train that first"
                             + (f" (--design {design})" if cfg.fingerprint is not None else "")
                             + f", or name its run with {option} RUN")
    return dataclasses.replace(cfg, **changes)


def run(config: str | None, data: Path | str, out: Path | str | None = None, *,
        design: str = "d4", point: int = 1, steps: int | None = None, seed: int | None = None,
        batch: int | None = None, teacher: Path | None = None, parent: Path | None = None,
        precision: str | None = None, threads: int = 1, device: str = "cpu",
        cache: Path | None = DEFAULT_CACHE, progress=None, log=print,
        deadline: float | None = None) -> dict:
    """Train ``config`` (a recipe name or JSON file; None: ``design`` at rate ``point``,
    planned for the data set folder ``data``) into ``out`` (default runs/NAME; an existing
    run resumes), then score the validation pick on the test cases where there are any;
    returns and writes ``summary.json``.  The split's case names go to ``split.json``.
    Past ``deadline`` (``time.time()``), training stops after the step in flight and the
    run is scored as it stands.
    ValueError or OSError for a bad config, data or parent run; InputError for bad data."""
    dev = resolve_device(device)
    data = Path(data)
    planned = recipe_for(config, data, design, point)
    training_data.check_root(data, planned.task_key)
    out = Path(out) if out else Path("runs") / planned.name
    cfg = prepare(planned, out, steps, seed, batch, teacher, parent, precision)
    t0 = time.time()
    cfg = dataclasses.replace(cfg, normalisation=training_data.normalisation_for(cfg, data))
    (x, t), (xv, val_labels), (xt, test_labels) = _sets(cfg, data, cache)
    log(f"{cfg.name}: {len(x)} training / {len(xv)} validation / {len(xt)} test "
        f"cases loaded in {time.time() - t0:.0f} s")
    split = {"seed": training_data.VALIDATION_SEED,
             **{part: [Path(image).name for image, _ in training_data.task_pairs(cfg.task_key,
                                                                                 data, part)]
                for part in ("fit", "val", "test")}}
    if (out / "checkpoint.pt").exists() and (out / "split.json").exists():
        # A run resumed on other validation cases would compare their Dice with its best so
        # far, and validate on cases it has trained on.
        was = json.loads((out / "split.json").read_text())
        if [was.get(part) for part in ("fit", "val")] != [split["fit"], split["val"]]:
            raise ValueError(f"{out}: started on another validation split than {data} gives now "
                             "(split.json; a splits_final.json added, or segcodec's draw "
                             "changed): train into a new --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    val = (xv, val_labels) if cfg.target == "labels" else None
    if deadline is not None:
        progress = budget.until(deadline, cfg.name, progress, log)
    try:
        loop.train(cfg, x, t, out, val=val, threads=threads, device=dev, progress=progress,
                   log=log)
    except budget.OutOfTime:  # the checkpoint holds every finished step; the pick is scored
        with contextlib.suppress(ImportError):
            loop.plot_losses(out / "log.csv", out / "losses.png")
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: the loop saved the last step
        log(f"{cfg.name}: stopped; {out / 'checkpoint.pt'} holds every finished step, and "
            "the same command resumes it")
        raise
    ck = loop.read_checkpoint(out / "checkpoint.pt")
    net, _ = loop.load_checkpoint(out / "checkpoint.pt", best=True)
    summary = {"config": cfg.name, "design": cfg.design, "steps": ck["step"],
               "train_seconds": round(ck["elapsed"]), "train_cases": len(x),
               "val_cases": len(xv), "test_cases": len(xt),
               "last": loop.last_logged(out / "log.csv")}
    if ck.get("best"):  # the weights chosen on the validation cases; test scores are theirs
        summary["picked"] = {"step": ck["best"]["step"], "val_dice": ck["best"]["val_dice"]}
    if cfg.target == "labels" and len(xt):
        summary["test"] = loop.evaluate(net, xt, test_labels, cfg.arch["n_classes"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _sets(cfg: recipes.Recipe, data: Path, cache: Path | None):
    """(images, soft targets) of the fit split; (images, labels) of the validation and test
    splits (empty where the data set has no test cases)."""
    x, t, _ = training_data.cached_set(cfg, data, "fit", cache)
    xv, _, val_labels = training_data.cached_set(cfg, data, "val", cache)
    test = training_data.task_pairs(cfg.task_key, data, "test")
    xt, _, test_labels = training_data.cached_set(cfg, data, "test", cache) if test else ([], 0, [])
    return (x, t), (xv, val_labels), (xt, test_labels)


def within(seconds: float | str, data: Path | str, out: Path | str | None = None, *,
           design: str = "d4", teacher: Path | None = None, batch: int | None = None,
           seed: int | None = None, precision: str | None = None, threads: int = 1,
           device: str = "cpu", cache: Path | None = DEFAULT_CACHE, progress_for=None,
           log=print) -> list[dict]:
    """Train ``design`` (planned for the data set folder ``data``, with ``batch`` and ``seed``
    where given; without ``batch``, a volume task on a CPU at ``budget.CPU_BATCH_3D``) and,
    for a compressed design without ``teacher``, its seg reference first, in ``precision``
    where given (else the recipe's), all within ``seconds`` of wall-clock time from now (or a
    duration such as "2h" or "90min"): each run's steps come from its speed measured here
    (``budget``).  A run already finished (its summary.json) is kept; one stopped midway
    resumes with the steps and precision it was planned with.  ``progress_for(name)`` gives
    each run's progress callback.
    Returns the summaries of the runs trained."""
    t_start = time.time()
    seconds = budget.parse(seconds) if isinstance(seconds, str) else seconds
    data = Path(data)
    dev = resolve_device(device)
    recipe = recipes.for_dataset(data, design)
    if batch is None and dev.type == "cpu" and recipe.arch["ndim"] == 3:
        batch = budget.CPU_BATCH_3D
    given = {k: v for k, v in (("batch", batch), ("seed", seed)) if v is not None}
    final = dataclasses.replace(recipe, **given)
    out = Path(out) if out else Path("runs") / final.name
    chain = [final]
    if final.teacher and teacher is None:
        chain.insert(0, dataclasses.replace(recipes.for_dataset(data, "seg"), **given))
    folders = {cfg.name: out.parent / cfg.name for cfg in chain}
    folders[final.name] = out
    todo = [cfg for cfg in chain if not (folders[cfg.name] / "summary.json").exists()]
    if not todo:
        log(f"{final.name}: {out} is finished")
        return []
    training_data.check_root(data, final.task_key)
    norm = training_data.normalisation_for(chain[0], data)
    (x, t), (xv, val_labels), _ = _sets(dataclasses.replace(chain[0], normalisation=norm),
                                        data, cache)
    # Runs stopped midway keep their planned steps and precision; the rest run in the one
    # given, else the recipe's.  bfloat16 ran CVC's D4 step 1.8x faster on a Zen 4 core, but
    # its Dice did not clearly follow (README): not the default.
    saved = {cfg.name: json.loads((folders[cfg.name] / "config.json").read_text())
             for cfg in todo if (folders[cfg.name] / "config.json").exists()
             and (folders[cfg.name] / "checkpoint.pt").exists()}
    chosen = {cfg.name: saved[cfg.name].get("precision", "fp32") if cfg.name in saved
              else precision or cfg.precision for cfg in todo}
    # Each design's real step, timed in that precision.  A d4 probe needs a teacher: where
    # the seg run is still to be trained, its probe's weights stand in.
    per_step, per_val = {}, {}
    given = Path(teacher) if teacher else folders[chain[0].name]
    probe_teacher = given / "checkpoint.pt" if given.is_dir() or not given.suffix else given
    with tempfile.TemporaryDirectory(prefix="segcodec-probe-") as tmp:
        for cfg in todo:
            cfg = dataclasses.replace(cfg, normalisation=norm)
            if cfg.teacher:
                cfg = dataclasses.replace(cfg, teacher=str(probe_teacher),
                                          init_segmentor=str(probe_teacher))
            probe = Path(tmp) / cfg.design
            per_step[cfg.name] = budget.seconds_per_step(
                dataclasses.replace(cfg, precision=chosen[cfg.name]), x, t, probe,
                threads=threads, device=dev)
            per_val[cfg.name] = budget.validation_seconds(cfg, (xv, val_labels),
                                                          threads=threads, device=dev)
            if cfg.design == "seg":
                probe_teacher = probe / "checkpoint.pt"
    # The rest of the time is shared out among the runs not yet started.
    steps, done, left = {}, {}, seconds - (time.time() - t_start)
    for cfg in todo:
        if cfg.name in saved:
            steps[cfg.name] = saved[cfg.name]["steps"]
            done[cfg.name] = loop.read_checkpoint(folders[cfg.name] / "checkpoint.pt")["step"]
            left -= (steps[cfg.name] - done[cfg.name]) * per_step[cfg.name]
    if left <= 0:
        raise ValueError(f"the budget of {budget.duration(seconds)} does not cover the speed "
                         "measurement and the runs stopped midway: give a longer --budget")
    fresh = [cfg for cfg in todo if cfg.name not in steps]
    for cfg in fresh:
        share = left * budget.shares([c.design for c in fresh])[cfg.design]
        steps[cfg.name] = budget.steps_within(share, per_step[cfg.name], per_val[cfg.name])
    # Each run's planned seconds: its steps still to do, and its validations.
    planned = {cfg.name: (steps[cfg.name] - done.get(cfg.name, 0)) * per_step[cfg.name]
               + budget.VALIDATIONS * per_val[cfg.name] for cfg in todo}
    ends, clock = {}, time.time()
    for cfg in todo:
        clock += planned[cfg.name]
        ends[cfg.name] = clock
    log(f"{final.name}: the plan for {budget.duration(seconds)} on {threads} thread(s) of "
        f"{dev}, batch {final.batch}: " + "; ".join(
            f"{cfg.name} {steps[cfg.name]:,} steps at {per_step[cfg.name]:.2f} s a step "
            f"({chosen[cfg.name]})"
            + (f" (from step {done[cfg.name]:,})" if cfg.name in done else "")
            + f", {budget.duration(planned[cfg.name])}" for cfg in todo)
        + f" (measured in {time.time() - t_start:.0f} s); done about "
        + time.strftime("%H:%M", time.localtime(ends[final.name])))
    summaries = []
    for cfg in todo:
        # A run that overruns its planned time (a machine slowed down) stops a little past it.
        slack = (budget.OVERRUN - 1) * planned[cfg.name]
        summaries.append(run(None, data, folders[cfg.name], design=cfg.design,
                             steps=steps[cfg.name], batch=batch, seed=seed,
                             precision=chosen[cfg.name],
                             teacher=teacher if cfg.teacher else None,
                             threads=threads, device=device, cache=cache,
                             progress=progress_for(cfg.name) if progress_for else None,
                             log=log, deadline=ends[cfg.name] + slack))
    return summaries


def reproduce(task: str, data: Path | str, runs: Path | str = "runs", models: Path = Path("models"),
              threads: int = 1, device: str = "cpu", cache: Path | None = DEFAULT_CACHE,
              log=print) -> list[dict]:
    """Train the recipes behind ``task``'s shipped models (its ``seg`` reference first, the
    teacher of the others), skipping finished runs, and export each model into ``models``.
    Returns the export results."""
    runs = Path(runs)
    shipped = SHIPPED[task]
    log(f"{task}: rebuilds {', '.join(shipped)}, the parent of the default "
        f"{DEFAULTS_NOT_REBUILT[task]}; the default's own lighten and distil steps are not "
        "rebuilt (README: The recipe)")
    parents = [f"{task}-seg", f"{task}-d4"]
    for recipe in dict.fromkeys(parents + [r for r, _ in shipped.values()]):
        if not (runs / recipe / "summary.json").exists():
            log(json.dumps(run(recipe, data, runs / recipe, threads=threads, device=device,
                               cache=cache, log=log)))
    return [export.export(runs / recipe / "checkpoint.pt", Path(data), name, models,
                          is_default, cache)
            for name, (recipe, is_default) in shipped.items()]

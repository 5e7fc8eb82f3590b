"""segcodec train | export: the training recipe (segcodec.train) behind two commands."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


def _fail(message: str) -> None:
    click.echo(f"segcodec: error: {message}", err=True)
    sys.exit(1)


@click.command()
@click.argument("config")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Folder holding isic2017/ and/or msd_hippocampus/.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Run folder (default runs/CONFIG); an existing run resumes.")
@click.option("--steps", type=int, help="Override the recipe's number of steps.")
@click.option("--seed", type=int, help="Override the recipe's seed (0).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path),
              default=Path.home() / ".cache" / "segcodec", show_default=True,
              help="Where the resampled training set is kept between runs.")
def train(config, data, out, steps, seed, threads, cache):
    """Train a recipe (e.g. isic-d4, hippocampus-seg) or a JSON config; evaluate on the test set.

    Writes checkpoint.pt (resumable), log.csv, losses.png and summary.json to the run folder.
    """
    import torch

    from segcodec.train import data as datasets, loop, recipes
    try:
        cfg = recipes.config(config)
    except (ValueError, OSError, KeyError) as exc:
        _fail(f"{config}: {exc}")
    try:
        datasets.check_root(data, cfg["task_key"])
    except ValueError as exc:
        _fail(str(exc))
    out = out or Path("runs") / cfg["name"]
    if steps:
        cfg["steps"] = steps
    if seed is not None:
        cfg["seed"] = seed
    if cfg.get("init"):
        cfg["init_segmentor"] = None  # the parent run already holds a trained s
    resuming = (out / "checkpoint.pt").exists()
    for key in ("init", "init_segmentor", "teacher"):  # a recipe name: its run beside ours
        if cfg.get(key) and not Path(cfg[key]).suffix:
            cfg[key] = str(out.parent / cfg[key] / "checkpoint.pt")
        if cfg.get(key) and not resuming and not Path(cfg[key]).exists():
            _fail(f"{cfg['name']} starts from {cfg[key]}: train that first")
    t0 = time.time()
    try:
        cfg["normalisation"] = datasets.normalisation_for(cfg, data)
        x, t, _ = datasets.cached_set(cfg, data, "fit", cache)
        xv, _, val_labels = datasets.cached_set(cfg, data, "val", cache)
        xt, _, test_labels = datasets.cached_set(cfg, data, "test", cache)
    except (OSError, ValueError) as exc:
        _fail(f"reading {data}: {exc}")
    click.echo(f"{cfg['name']}: {len(x)} training / {len(xv)} validation / {len(xt)} test "
               f"cases loaded in {time.time() - t0:.0f} s", err=True)
    val = (xv, val_labels) if cfg["target"] == "labels" else None
    try:
        with click.progressbar(length=cfg["steps"], label=cfg["name"], file=sys.stderr) as bar:
            def progress(step, total):
                bar.update(step - bar.pos)
            loop.train(cfg, x, t, out, val=val, threads=threads, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    net, _ = loop.load_checkpoint(out / "checkpoint.pt", best=True)
    summary = {"config": cfg["name"], "design": cfg["design"], "steps": ck["step"],
               "train_seconds": round(ck["elapsed"]), "train_cases": len(x),
               "val_cases": len(xv), "test_cases": len(xt),
               "last": loop.last_logged(out / "log.csv")}
    if ck.get("best"):  # the weights chosen on the validation cases; test scores are theirs
        summary["picked"] = {"step": ck["best"]["step"], "val_dice": ck["best"]["val_dice"]}
    if cfg["target"] == "labels":
        summary["test"] = loop.evaluate(net, xt, test_labels, cfg["arch"]["n_classes"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    click.echo(json.dumps(summary))


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Data folder: the entropy tables are fitted on the training latents.")
@click.option("--name", required=True, help="Model name, e.g. isic-lesion-v1.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Folder for the .sgm file (default: the package's models/).")
@click.option("--default", "is_default", is_flag=True,
              help="Make it the model picked for its input kind.")
@click.option("--cache", type=click.Path(path_type=Path),
              default=Path.home() / ".cache" / "segcodec", show_default=True)
def export(checkpoint, data, name, out, is_default, cache):
    """Turn a C+g+s training checkpoint into a zoo model file (.sgm)."""
    from segcodec.train import export as exporter
    try:
        result = exporter.export(checkpoint, data, name, out, is_default, cache)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    click.echo(json.dumps(result))

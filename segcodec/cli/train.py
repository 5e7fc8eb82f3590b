"""segcodec train | reproduce | export: the training recipe (segcodec.train) on the command line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .common import fail, need_torch


@click.command()
@click.argument("config", required=False)
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="A data set folder (MSD / nnU-Net: dataset.json, imagesTr/, labelsTr/; or "
                   "images/ + masks/), or for the isic-* and hippocampus-* recipes the folder "
                   "holding isic2017/ and msd_hippocampus/.")
@click.option("--design", type=click.Choice(["seg", "d1", "d2", "d3", "d4", "autoseg"]),
              default="d4", show_default=True,
              help="Without CONFIG: the design to train, planned for the data set. d1-d4 "
                   "start from (and are taught by) the seg run, so train that first.")
@click.option("--rate-point", type=int, default=1, show_default=True,
              help="Without CONFIG: d4 fine-tuned from the d4 run with 3^(N-1) times its "
                   "rate weight.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Run folder (default runs/NAME); an existing run resumes. With "
                   "--budget, the last run's: the seg reference goes beside it.")
@click.option("--steps", type=click.IntRange(1), help="Override the recipe's number of steps.")
@click.option("--seed", type=int, help="Override the recipe's seed (0).")
@click.option("--batch", type=click.IntRange(1),
              help="Override the recipe's batch size (with --budget on a CPU, a volume "
                   "task's is 2, nnU-Net's 3D batch).")
@click.option("--teacher", type=click.Path(path_type=Path, exists=True),
              help="The seg run (folder or checkpoint.pt) that d1-d4 start from and learn "
                   "from (default: the planned seg run's folder beside --out's).")
@click.option("--parent", type=click.Path(path_type=Path, exists=True),
              help="The d4 run a rate point fine-tunes (default: beside --out's).")
@click.option("--budget", metavar="DURATION",
              help="Without CONFIG: train within this wall-clock time (e.g. 2h, 90min), the "
                   "seg reference first where a compressed design has no --teacher; the "
                   "steps are planned from the speed measured on this machine, and the plan "
                   "is printed before training starts.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]),
              help="The forward passes' arithmetic: float32, or bfloat16 autocast (about "
                   "1.8x the steps on CPUs with AVX512-BF16 or AMX).  Default: the recipe's "
                   "(fp32).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="cpu, cuda, cuda:N or auto; on a GPU the training set is held in its memory.")
@click.option("--cache", type=click.Path(path_type=Path),
              default=Path.home() / ".cache" / "segcodec", show_default=True,
              help="Where the resampled training set is kept between runs.")
def train(config, data, design, rate_point, out, steps, seed, batch, teacher, parent, budget,
          precision, threads, device, cache):
    """Train on a data set folder (planned from its fingerprint), or a recipe (e.g. isic-d4,
    hippocampus-seg) or JSON config; pick its weights on a seeded validation split of the
    training cases (look-alike cases kept on one side; DIR/splits_final.json, as nnU-Net's,
    names them instead) and score them on the test cases (imagesTs/ + labelsTs/) where there
    are any.

    \b
    segcodec train --data Task09_Spleen --design seg   # the reference, D4's teacher
    segcodec train --data Task09_Spleen                # D4 -> runs/spleen-d4/
    segcodec train --data Task09_Spleen --budget 2h    # both, planned to end in 2 h
    segcodec export runs/spleen-d4/checkpoint.pt --data Task09_Spleen --name spleen-v1

    Writes checkpoint.pt (resumable), log.csv, val.csv, losses.png, split.json and summary.json
    to the run folder.
    """
    need_torch("train", "train")
    from segcodec.train import run

    bars = []

    def progress_for(label):
        started = {}

        def progress(step, total):
            if sys.stderr.isatty():
                if not bars or bars[-1][0] != label:
                    if bars:
                        bars[-1][1].__exit__(None, None, None)
                    bars.append((label, click.progressbar(length=total, label=label,
                                                          file=sys.stderr)))
                    bars[-1][1].__enter__()
                bars[-1][1].update(step - bars[-1][1].pos)
                return
            # A log (nohup, a scheduler): a line at each twentieth of the run, with the time
            # left at the speed measured since the run started in this process.
            started.setdefault("at", (step, time.perf_counter()))
            first, t0 = started["at"]
            if step > first and (step == total or step * 20 // total > (step - 1) * 20 // total):
                per_step = (time.perf_counter() - t0) / (step - first)
                click.echo(f"{label}: step {step}/{total}, {per_step:.2f} s a step, "
                           f"{_duration(per_step * (total - step))} left", err=True)
        return progress

    if budget is not None:
        clash = [option for option, given in (
            ("CONFIG", config), ("--steps", steps), ("--parent", parent),
            ("--rate-point", rate_point != 1)) if given]
        if clash:
            fail(f"--budget plans a data set's seg and {design} runs itself; it takes no "
                 + ", ".join(clash))
    try:
        if budget is not None:
            summaries = run.within(budget, data, out, design=design,
                                   teacher=teacher, batch=batch, seed=seed,
                                   precision=precision, threads=threads,
                                   device=device,
                                   cache=cache, progress_for=progress_for,
                                   log=lambda m: click.echo(m, err=True))
        else:
            summaries = [run.run(config, data, out, design=design, point=rate_point,
                                 steps=steps, seed=seed, batch=batch, teacher=teacher,
                                 parent=parent, precision=precision, threads=threads,
                                 device=device, cache=cache,
                                 progress=progress_for(config or design),
                                 log=lambda m: click.echo(m, err=True))]
    except (ValueError, OSError, KeyError) as exc:
        fail(f"{config}: {exc}" if config else str(exc))
    finally:
        if bars:
            bars[-1][1].__exit__(None, None, None)
    for summary in summaries:
        click.echo(json.dumps(summary))


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


@click.command()
@click.argument("task", type=click.Choice(["isic", "hippocampus"]))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Folder holding isic2017/ and/or msd_hippocampus/.")
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="Where the runs go; finished ones are kept.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("models"),
              show_default=True, help="Folder for the .sgm files; add it to "
                                      "SEGCODEC_MODEL_PATH to use them.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--cache", type=click.Path(path_type=Path),
              default=Path.home() / ".cache" / "segcodec", show_default=True)
def reproduce(task, data, runs, out, threads, device, cache):
    """Train and export the parents of TASK's default model from their recipes: the seg
    reference (the teacher), D4, and the rate point (isic-lesion-v3.1, hippocampus-v3), not
    made defaults. The defaults' own steps (v4, v5) are not rebuilt. The recipes are the GPU
    runs' (hours on a CPU)."""
    need_torch("reproduce", "train")
    from segcodec.train import run
    try:
        for result in run.reproduce(task, data, runs, out, threads, device, cache,
                                    log=lambda m: click.echo(m, err=True)):
            click.echo(json.dumps(result))
    except (ValueError, OSError, KeyError) as exc:
        fail(f"{task}: {exc}")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="The run's data folder: the entropy tables are fitted on the training "
                   "latents.")
@click.option("--name", required=True, help="Model name, e.g. isic-lesion-v1.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("models"),
              show_default=True, help="Folder for the .sgm file; add it to "
                                      "SEGCODEC_MODEL_PATH to use it.")
@click.option("--default", "is_default", is_flag=True,
              help="Name it the default for its input kind in the index of --out (only "
                   "segcodec/models/'s index picks defaults: for shipping a model).")
@click.option("--cache", type=click.Path(path_type=Path),
              default=Path.home() / ".cache" / "segcodec", show_default=True)
def export(checkpoint, data, name, out, is_default, cache):
    """Turn a C+g+s training checkpoint into a zoo model file (.sgm)."""
    need_torch("export", "train")
    from segcodec.train import export as exporter
    try:
        result = exporter.export(checkpoint, data, name, out, is_default, cache)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    click.echo(json.dumps(result))

"""Training within a wall-clock budget: steps planned from the speed measured on this machine.

    segcodec train --data DIR --budget 2h      # the seg reference, then D4, in two hours

A run's learning-rate schedule (``loop.one_cycle``) needs its number of steps before it
starts, so the budget is turned into steps once: each design to be trained runs a short
throwaway probe of its real step (same data, batch, threads), timed after its warm-up, and
validation's cost is measured on the validation cases.  The time left is then shared out
(``SHARES``) and the plan is logged, with its durations, before the first real step.  A
guard stops a run that overruns its share (a machine that slowed down) a little past it;
its checkpoint keeps every finished step and its validation pick stands.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from . import loop
from .recipes import Recipe

# The share of the budget each design gets when both are trained.  D4 learns C, g and its
# rate from a teacher that is already good, and costs about 2.5 times seg's step on a CPU.
SHARES = {"seg": 0.4, "d4": 0.6}
# A volume task's batch on a CPU unless --batch says otherwise: nnU-Net's 3D batch.  The 3D
# recipe's 16 is a GPU's: 2 hours on one thread bought ACDC 192 D4 steps (README: "Your own
# data").
CPU_BATCH_3D = 2
PROBE_STEPS = 12  # timed from the fourth: the first steps pay for allocation and caches
VALIDATIONS = 20  # loop.train scores the validation cases 20 times a run
MARGIN = 0.9  # the planned steps fill 90% of a share: checkpoints, the test score, noise
OVERRUN = 1.1  # a run still going at 110% of its share stops there

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


def parse(text: str) -> float:
    """Seconds in a duration such as ``2h``, ``90min``, ``1h30m`` or ``45m``; ValueError
    otherwise."""
    s = text.strip().lower()
    parts = _PART.findall(s)
    if not parts or _PART.sub("", s).strip() or any(unit not in _UNITS for _, unit in parts):
        raise ValueError(f"--budget {text!r} is not a duration such as 2h, 90min or 1h30m")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    if seconds <= 0:
        raise ValueError(f"--budget {text!r} is not a positive duration")
    return seconds


def seconds_per_step(cfg: Recipe, x, t, out: Path, *, threads: int = 1, device="cpu") -> float:
    """The wall-clock time of one step of ``cfg`` on these training tensors, measured by a
    throwaway run of ``PROBE_STEPS`` into ``out``.  ``cfg``'s parent runs must exist."""
    marks = {}
    loop.train(dataclasses.replace(cfg, steps=PROBE_STEPS), x, t, out, threads=threads,
               device=device, save_every_s=1e9,
               progress=lambda step, total: marks.setdefault(step, time.perf_counter()))
    return (marks[PROBE_STEPS] - marks[3]) / (PROBE_STEPS - 3)


def validation_seconds(cfg: Recipe, val, *, threads: int = 1, device="cpu") -> float:
    """The time of one scoring of the validation cases as ``loop.train`` does it (Dice, and
    for a compressed design the rate estimate's pass); 0 for a design scored on none."""
    import torch
    if cfg.target != "labels":
        return 0.0
    torch.set_num_threads(threads)
    net = loop.build_net(cfg).to(device)
    x = val[0].to(device)
    t0 = time.perf_counter()
    loop.evaluate(net, x, val[1], cfg.arch["n_classes"])
    if cfg.compress:
        with torch.no_grad():
            loop.run_net(net.eval(), x, stochastic=False)
    return time.perf_counter() - t0


def steps_within(seconds: float, per_step: float, per_validation: float) -> int:
    """How many steps fit in ``seconds`` at ``per_step``, validation and ``MARGIN`` included
    (at least ``PROBE_STEPS``)."""
    usable = seconds * MARGIN - VALIDATIONS * per_validation
    return max(PROBE_STEPS, int(usable / per_step))


def shares(designs) -> dict[str, float]:
    """Each design's fraction of the budget: ``SHARES`` over the designs being trained."""
    total = sum(SHARES.get(d, SHARES["d4"]) for d in designs)
    return {d: SHARES.get(d, SHARES["d4"]) / total for d in designs}


class OutOfTime(KeyboardInterrupt):
    """Raised from a run's progress callback past its deadline; ``loop.train`` saves every
    finished step, as on Ctrl-C."""


def until(deadline: float, name: str, progress=None, log=print):
    """``progress``, wrapped to stop the run (``OutOfTime``) once ``time.time()`` passes
    ``deadline``."""
    def check(step, total):
        if progress:
            progress(step, total)
        if time.time() > deadline and step < total:
            log(f"{name}: past its share of the budget at step {step} of {total}; "
                f"stopping with the steps done (train it on with --steps {total})")
            raise OutOfTime
    return check


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"

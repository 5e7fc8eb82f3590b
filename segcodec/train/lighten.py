"""A lighter model from a trained one: C and g distilled into narrower (or strided) networks.

    python -m segcodec.train.lighten runs/hippocampus-d4-r2/checkpoint.pt \\
        --arch '{"c_widths": [4, 16, 24], "g_widths": [16, 8]}' --data ../shared/data \\
        --out runs/hippocampus-light/checkpoint.pt --threads 2
    segcodec export runs/hippocampus-light/checkpoint.pt --data ../shared/data --name NAME

Where a network's shape changes (its widths, or C's first stride), the new one learns the
parent's output on the parent's (augmented) training cases: C the parent's bit probabilities,
g the parent's feature map from the parent's bits.  s, D and the rate model are the parent's,
and so is the latent grid.  Training a new C and g from scratch on the CPU takes hours;
learning a trained parent's outputs takes minutes.  The checkpoint exports as it is
(``hippocampus-v4`` is one), or a D4 recipe fine-tunes it end to end (``init``), as rate
points do; for hippocampus-v4 a 300-step fine-tune scored lower on the validation split
(0.844 against 0.849).  A strided C distilled this way lost Dice on the hippocampus (0.835
against v4's 0.849); hippocampus-v5's strided C was trained end to end on a GPU instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import architecture
from ..errors import SgcError
from ..networks import downsample
from . import data as training_data
from . import loop
from .run import DEFAULT_CACHE


def lighten(parent: Path, arch: dict, data: Path, out: Path, *, name: str | None = None,
            steps: int = 1500, batch: int = 16, lr: float = 2e-3, threads: int = 1,
            cache: Path | None = DEFAULT_CACHE, log=print) -> dict:
    """Write a checkpoint for ``arch`` (the parent's, with ``arch``'s keys replaced) to
    ``out``, under the config name ``name`` (default: the parent's, ``-light`` added); returns
    the validation Dice of parent and child.  ``segcodec export`` takes it as it is, and a D4
    recipe may fine-tune it (``init``)."""
    torch.set_num_threads(threads)
    ck = loop.read_checkpoint(parent)
    teacher, cfg = loop.network_of(ck, best=True)
    child_cfg = dataclasses.replace(cfg, arch={**cfg.arch, **arch}, init=str(parent),
                                    name=name or f"{cfg.name}-light")
    architecture.filled(child_cfg.arch)  # what export and the loader will ask of it
    if downsample(child_cfg.arch) != downsample(cfg.arch):
        raise SgcError(f"C must keep the parent's latent grid (the child downsamples by "
                       f"{downsample(child_cfg.arch)}, the parent by {downsample(cfg.arch)})")
    torch.manual_seed(cfg.seed)
    child = loop.build_net(child_cfg)
    state = child.state_dict()
    for key, value in teacher.state_dict().items():  # what keeps its shape is the parent's
        if key in state and state[key].shape == value.shape:
            state[key] = value
    child.load_state_dict(state)
    # Only the networks whose shape changed learn; the rest stay the parent's.
    child_arch, parent_arch = child.arch, architecture.filled(cfg.arch)
    learners = [m for keys, m in ((("c_widths", "c_first_stride"), child.compressor),
                                  (("g_widths",), child.reconstructor))
                if any(child_arch[k] != parent_arch[k] for k in keys)]
    params = [p for m in learners for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    sched = loop.one_cycle(opt, lr, steps)
    x, t, _ = training_data.cached_set(cfg, data, "fit", cache)
    xv, _, val_labels = training_data.cached_set(cfg, data, "val", cache)
    gen = torch.Generator().manual_seed(cfg.seed)
    teacher.requires_grad_(False)
    child.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(len(x), (batch,), generator=gen)
        xb, _ = loop.augment(x[idx], t[idx], gen, cfg.augment)
        with torch.no_grad():
            logits = teacher.compressor(xb)
            bits = (logits > 0).to(xb.dtype)
            feature = teacher.reconstructor(bits)
        loss_c = F.binary_cross_entropy_with_logits(child.compressor(xb), torch.sigmoid(logits))
        loss_g = F.mse_loss(child.reconstructor(bits), feature)
        opt.zero_grad()
        (loss_c + loss_g).backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            log(f"step {step}/{steps}  {time.time() - t0:.0f} s  C {loss_c.item():.4f}  "
                f"g {loss_g.item():.5f}")
    child.eval()
    n = cfg.arch["n_classes"]
    scores = {"parent_val_dice": loop.evaluate(teacher, xv, val_labels, n)["dice"],
              "child_val_dice": loop.evaluate(child, xv, val_labels, n)["dice"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net": child.state_dict(), "critic": ck.get("critic"), "rate": ck.get("rate"),
                "config": child_cfg.resolve(), "step": steps, "elapsed": time.time() - t0,
                "hardware": f"CPU, {threads} thread(s): {steps} steps of lighten from "
                            f"{cfg.name}", **scores}, out)
    log(json.dumps(scores))
    return scores


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m segcodec.train.lighten", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parent", type=Path, help="a trained run's checkpoint.pt")
    ap.add_argument("--arch", type=json.loads, required=True,
                    help="architecture keys to change, as JSON")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", help="the config's name, which the exported manifest records")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        lighten(args.parent, args.arch, args.data, args.out, name=args.name,
                steps=args.steps, batch=args.batch, threads=args.threads)
    except (SgcError, ValueError, OSError, KeyError) as exc:
        sys.exit(f"lighten: error: {exc}")


if __name__ == "__main__":
    main()

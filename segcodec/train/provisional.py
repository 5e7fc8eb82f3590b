"""Brief training of the provisional 2D and 3D models (issue 2), seeded and resumable.

    python -m segcodec.train.provisional isic --data ../shared/data --out runs/isic --steps 1500

The full recipe of the paper (discriminator, rate loss under the shipped tables) is issue 3;
this loop trains C, g and s jointly on segmentation loss plus a light marginal-entropy penalty
so the whole encode -> segment path has real weights to run on.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..networks import SegCodecNet
from ..transforms import labels_from_logits
from . import data

TASKS = {
    "isic": {
        "arch": {"ndim": 2, "in_channels": 3, "latent_channels": 4, "c_widths": [16, 32, 48, 48],
                 "g_widths": [64, 32, 16, 8], "s_widths": [16, 32, 64], "n_classes": 2,
                 "work_shape": [128, 128]},
        "labels": ["background", "lesion"],
        "task": "ISIC 2017 skin lesion segmentation (dermoscopy, RGB)",
        "batch": 16, "lr": 2e-3, "rate_weight": 0.05,
    },
    "hippocampus": {
        "arch": {"ndim": 3, "in_channels": 1, "latent_channels": 2, "c_widths": [8, 16, 24],
                 "g_widths": [32, 16, 8], "s_widths": [8, 16, 32], "n_classes": 3,
                 "work_shape": [32, 48, 32]},
        "labels": ["background", "anterior hippocampus", "posterior hippocampus"],
        "task": "MSD Task04 hippocampus segmentation (T1 MRI)",
        "normalisation": {"kind": "zscore"},
        "batch": 8, "lr": 2e-3, "rate_weight": 0.05,
    },
}


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft cross-entropy and soft Dice over the foreground classes."""
    logp = F.log_softmax(logits, 1)
    ce = -(target * logp).sum(1).mean()
    prob = logp.exp()[:, 1:]
    t = target[:, 1:]
    dims = (0,) + tuple(range(2, logits.ndim))
    dice = ((2 * (prob * t).sum(dims) + 1) / (prob.sum(dims) + t.sum(dims) + 1)).mean()
    return ce, dice


def marginal_rate(p: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """Bits per working pixel if each latent channel were coded with its batch-mean probability."""
    q = p.mean(dim=(0,) + tuple(range(2, p.ndim))).clamp(1e-6, 1 - 1e-6)
    h = -(q * torch.log2(q) + (1 - q) * torch.log2(1 - q))
    return h.sum() * p[0, 0].numel() / n_pixels


def dice_scores(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    out = []
    for c in range(1, n_classes):
        a, b = pred == c, truth == c
        denom = a.sum() + b.sum()
        out.append(1.0 if denom == 0 else 2.0 * (a & b).sum() / denom)
    return out


@torch.no_grad()
def evaluate(net: SegCodecNet, x: torch.Tensor, full_labels: list[np.ndarray]) -> list[float]:
    net.eval()
    scores = []
    for i, truth in enumerate(full_labels):
        logits, _ = net(x[i:i + 1], stochastic=False)
        scores.append(dice_scores(labels_from_logits(logits, truth.shape), truth,
                                  net.arch["n_classes"]))
    net.train()
    return np.mean(scores, 0).tolist()


def augment(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator):
    """Flips and (2D) quarter turns; lesions have no preferred orientation."""
    if x.ndim == 4:
        k = int(torch.randint(4, (1,), generator=gen))
        x, t = torch.rot90(x, k, (2, 3)), torch.rot90(t, k, (2, 3))
        dims = [2, 3]
    else:
        dims = [2]  # left-right only; the hippocampus has a head and a tail
    for d in dims:
        if torch.rand(1, generator=gen) < 0.5:
            x, t = x.flip(d), t.flip(d)
    return x, t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TASKS[args.task]
    arch = cfg["arch"]
    work = tuple(arch["work_shape"])
    args.out.mkdir(parents=True, exist_ok=True)

    if args.task == "isic":
        train_pairs = data.isic_files(args.data, "train")
        test_pairs = data.isic_files(args.data, "val")
        mean, std = data.channel_stats(train_pairs)
        norm = {"kind": "fixed", "scale": 1 / 255, "mean": mean, "std": std}
    else:
        train_pairs = data.hippocampus_files(args.data, "train")
        test_pairs = data.hippocampus_files(args.data, "test")
        norm = cfg["normalisation"]
    t0 = time.time()
    x, t, _ = data.load_set(train_pairs, norm, arch["n_classes"], work)
    xt, _, test_labels = data.load_set(test_pairs, norm, arch["n_classes"], work)
    print(f"loaded {len(x)} train / {len(xt)} test in {time.time() - t0:.0f}s", flush=True)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = SegCodecNet(arch)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=args.steps,
                                                pct_start=0.05)
    ckpt_path = args.out / "checkpoint.pt"
    step, elapsed = 0, 0.0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["rng"])
        step, elapsed = ck["step"], ck["elapsed"]
        print(f"resumed at step {step}", flush=True)

    def save():
        torch.save({"arch": arch, "normalisation": norm, "labels": cfg["labels"],
                    "task": cfg["task"], "state_dict": net.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "gen": gen.get_state(),
                    "rng": torch.get_rng_state(), "step": step, "elapsed": elapsed,
                    "seed": args.seed, "steps": args.steps}, ckpt_path)

    log = open(args.out / "log.csv", "a", newline="")
    writer = csv.writer(log)
    if step == 0:
        writer.writerow(["step", "elapsed_s", "loss", "ce", "dice", "rate_bpp_work"])
    n_pix = int(np.prod(work))
    start, last_save = time.time() - elapsed, time.time()
    while step < args.steps:
        idx = torch.randint(len(x), (cfg["batch"],), generator=gen)
        xb, tb = augment(x[idx], t[idx], gen)
        logits, p = net(xb)
        ce, dice = seg_loss(logits, tb)
        rate = marginal_rate(p, n_pix)
        # The rate penalty ramps in over the first half so latents carry information first.
        ramp = min(1.0, step / (0.5 * args.steps))
        loss = ce + (1 - dice) + cfg["rate_weight"] * ramp * rate
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        elapsed = time.time() - start
        if step % 25 == 0:
            writer.writerow([step, round(elapsed, 1), f"{loss.item():.4f}", f"{ce.item():.4f}",
                             f"{dice.item():.4f}", f"{rate.item():.5f}"])
            log.flush()
            print(f"step {step} {elapsed:.0f}s loss {loss.item():.3f} dice {dice.item():.3f} "
                  f"rate {rate.item():.4f}", flush=True)
        if time.time() - last_save > 120:
            save()
            last_save = time.time()
    save()
    scores = evaluate(net, xt, test_labels)
    summary = {"task": args.task, "steps": step, "train_seconds": round(elapsed),
               "test_dice_per_class": scores, "test_cases": len(test_labels)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

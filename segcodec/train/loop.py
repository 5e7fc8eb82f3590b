"""The training loop: alternating C+s and D updates, seeded and resumable (Liu et al. 2020).

Each step draws a batch of working-grid images and soft targets, takes one C+g+s step with D
fixed (``loss_seg`` + ``dis_weight`` x ``loss_dis`` + ``rate_weight`` x ``loss_cr``), then,
when the design has a critic, one D step maximising ``loss_dis``.  Everything a run needs to
resume (weights, optimisers, schedules, random states, the rate model's counts) is in
``checkpoint.pt``; losses go to ``log.csv`` and ``losses.png``.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import pickle
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import architecture
from ..metrics import scores
from ..networks import AutoEncoder, SegCodecNet, Segmentor
from ..transforms import labels_from_logits
from .critic import Critic
from .losses import ContextRate, loss_dis, loss_distil, loss_seg
from .recipes import Recipe

# A run resumes only under the config it started with: every field but these, which say where
# its parent runs are (a runs folder may move).
RESUME_IGNORES = ("init", "init_segmentor", "teacher", "init_compressor")
LOG_COLUMNS = ["step", "elapsed_s", "loss", "loss_seg", "loss_dis", "loss_cr_bpp", "loss_distil",
               "dice"]
VAL_COLUMNS = ["step", "val_dice", "val_dice_classes", "val_bpp_estimate"]


def load_grown(module: nn.Module, state: dict, grow: bool = True) -> None:
    """Load a parent run's weights ``state`` into ``module``, whose recipe may have widened
    the parent (more latent channels): a tensor larger than the parent's in some dimensions
    gets the parent's block; its new outputs keep their initial weights and its new inputs
    get zero weights, so the grown network starts as the parent's function (new latents
    that nothing reads yet).  Without ``grow`` (the rate model's running counts), a tensor
    of another shape keeps its initial value.  ValueError for a tensor the parent's does
    not fit into."""
    own = module.state_dict()
    for key, value in state.items():
        mine = own[key]
        if mine.shape == value.shape:
            own[key] = value
            continue
        fits = mine.ndim == value.ndim and all(a >= b for a, b in zip(mine.shape, value.shape))
        if grow and not fits:
            raise ValueError(f"{key}: the parent run's {tuple(value.shape)} does not fit this "
                             f"recipe's {tuple(mine.shape)}")
        if grow:
            grown = mine.clone()
            if grown.ndim > 1:
                grown[:, value.shape[1]:] = 0
            grown[tuple(slice(0, n) for n in value.shape)] = value
            own[key] = grown
    module.load_state_dict(own)


def build_net(cfg: Recipe) -> nn.Module:
    arch = architecture.filled(cfg.arch)
    if cfg.target == "image":
        return AutoEncoder(arch)
    if cfg.compress:
        return SegCodecNet(arch)
    return Segmentor(arch["ndim"], arch["n_classes"], arch["s_widths"],
                     in_channels=arch["in_channels"], norm=arch["s_norm"])


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int):
    """The learning-rate schedule of every run: warm-up, then cosine decay."""
    # A warm-up of at least 3 steps: OneCycleLR divides by zero when it lasts exactly one.
    warm_up = max(0.05, 3 / steps) if steps >= 6 else 0.05
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                               pct_start=warm_up)


def run_net(net: nn.Module, x: torch.Tensor, stochastic: bool = True,
            features: list | None = None):
    """(output, bit probabilities or None, bits or None) for any design; ``features``
    collects s's bottleneck activations where there is an s."""
    if isinstance(net, SegCodecNet):
        return net(x, stochastic, features)
    if isinstance(net, AutoEncoder):
        return net(x, stochastic)
    return net(x, features), None, None


def augment(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator, kind: str = "flips"):
    """Flips and (2D) quarter turns; lesions have no preferred orientation.

    ``kind="affine"`` adds, per case, a random similarity transform (2D: any angle, scale
    within 15%, shift within 10%; 3D: an in-plane turn within 0.15 rad, scale within 10%, shift
    within 5%) of image and targets alike, and a gain and offset of 0.1 sigma per channel.
    """
    if kind == "affine":
        x, t = _affine(x, t, gen)
    elif kind != "flips":
        raise ValueError(f"unknown augmentation {kind!r}")
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


def _affine(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator):
    n, nd = len(x), x.ndim - 2

    def draw(*shape):  # from the run's generator, so a resumed run draws the same
        return torch.rand(*shape, generator=gen).to(x.device) * 2 - 1

    angle = draw(n) * (torch.pi if nd == 2 else 0.15)
    scale = torch.exp(draw(n) * (0.15 if nd == 2 else 0.1))
    theta = torch.zeros(n, nd, nd + 1, device=x.device)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if nd == 3:
        theta[:, 2, 2] = scale
    theta[:, :, nd] = draw(n, nd) * (0.1 if nd == 2 else 0.05)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    t = F.grid_sample(t, grid, padding_mode="reflection", align_corners=False)
    shape = (n, x.shape[1]) + (1,) * nd
    return x * (1 + 0.1 * draw(*shape)) + 0.1 * draw(*shape), t


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, full_labels: list[np.ndarray],
             n_classes: int) -> dict:
    """Mean Dice and IoU per class at each case's full size (deterministic bits)."""
    was_training = net.training
    net.eval()
    rows = []
    for i, truth in enumerate(full_labels):
        logits, _, _ = run_net(net, x[i:i + 1], stochastic=False)
        rows.append(scores(labels_from_logits(logits, truth.shape), truth, n_classes))
    net.train(was_training)
    return {k: np.mean([r[k] for r in rows], 0).round(4).tolist() for k in ("dice", "iou")}


def plot_losses(log_path: Path, png_path: Path) -> None:
    """Loss curves from log.csv (needs matplotlib, from the ``train`` extra)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(log_path)))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]
    cols = [c for c in LOG_COLUMNS[2:] if any(float(r[c]) for r in rows)]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.8), squeeze=False)
    for ax, c in zip(axes[0], cols):
        ax.plot(step, [float(r[c]) for r in rows])
        ax.set_title(c)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def train(cfg: Recipe, x: torch.Tensor, t: torch.Tensor, out: Path, *, val=None,
          threads: int = 1, device: str | torch.device = "cpu", log_every: int = 25,
          save_every_s: float = 120.0, progress=None, log=None) -> None:
    """Train ``cfg`` on working-grid images ``x`` and soft targets ``t``; resume from ``out``.

    ``val`` = (working-grid images, full-size labels) of the validation cases: scored 20
    times a run (``val.csv``), and the best-scoring weights are kept in the checkpoint as
    ``best`` (among those past the rate ramp, whose rate is the final one).
    ``progress(step, total)`` is called after every step, ``log(line)`` when a run resumes.
    On ``device`` (a GPU) the whole
    training set is held in its memory; checkpoints load on any device.
    """
    torch.set_num_threads(threads)
    device = torch.device(device)
    x, t = x.to(device), t.to(device)
    if val is not None:
        val = (val[0].to(device), val[1])
    folder = RunFolder(out, cfg, device)  # a changed config is refused before anything else
    if folder.resumed is not None and log:
        log(f"{cfg.name}: resuming {out} from step {folder.resumed['step']} of {cfg.steps}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    parts = _Parts.build(cfg, device)
    if folder.resumed is None:
        parts.start_from_parents(cfg, device)
        step, elapsed, best = 0, 0.0, None
    else:
        step, elapsed, best = folder.restore(parts, gen)
    steps, n_pix = cfg.steps, int(np.prod(cfg.arch["work_shape"]))
    val_every = max(1, steps // 20)
    # Picks come after the rate ramp (or ``select_from`` x steps, where a fine-tune to a new
    # rate point needs time to reach it), so the pick codes at the run's rate.
    select_from = cfg.rate_ramp if cfg.select_from is None else cfg.select_from
    selectable_from = int(select_from * steps) if cfg.rate_weight else 0
    folder.open_logs(step)
    start, last_save = time.time() - elapsed, time.time()

    def save():
        folder.save(parts, gen, step, elapsed, best)

    parts.net.train()
    stop = _StopFlag()
    try:
        while step < steps:
            idx = torch.randint(len(x), (cfg.batch,), generator=gen)
            xb, tb = augment(x[idx.to(device)], t[idx.to(device)], gen, cfg.augment)
            logged = (step + 1) % log_every == 0 or step + 1 == steps
            row = parts.step(cfg, xb, tb, step, n_pix, report=logged)
            step += 1
            elapsed = time.time() - start
            if logged:
                folder.log_row({"step": step, "elapsed_s": round(elapsed, 1), **row})
            if val is not None and (step % val_every == 0 or step == steps):
                mean = folder.validation_row(step, *parts.validate(val, cfg.arch["n_classes"],
                                                                    n_pix))
                if step >= selectable_from and (best is None or mean > best["val_dice"]):
                    best = {"step": step, "val_dice": mean,
                            "net": {k: v.detach().to("cpu", copy=True)
                                    for k, v in parts.net.state_dict().items()}}
            if time.time() - last_save > save_every_s:
                save()
                last_save = time.time()
            try:
                if progress:
                    progress(step, steps)
            except KeyboardInterrupt:
                save()  # every finished step is kept; the random states are consistent here
                raise
            if stop.signal is not None:  # Ctrl-C or SIGTERM during the step: it finished; keep it
                save()
                raise KeyboardInterrupt if stop.signal == signal.SIGINT else SystemExit(143)
    finally:
        stop.restore()
        folder.close_logs()
    save()
    try:
        plot_losses(folder.log_path, out / "losses.png")
    except ImportError:
        pass  # curves stay in log.csv


@dataclasses.dataclass
class _Parts:
    """What a run trains (s alone, or C+g+s; D and its optimiser where the design has a
    critic; the rate model where it compresses) and the frozen teacher it learns from."""

    net: nn.Module
    opt: torch.optim.Optimizer
    sched: object
    critic: nn.Module | None
    d_opt: torch.optim.Optimizer | None
    rate: nn.Module | None
    teacher: nn.Module | None

    CHECKPOINTED = ("net", "opt", "sched", "critic", "d_opt", "rate")

    @classmethod
    def build(cls, cfg: Recipe, device) -> "_Parts":
        arch = cfg.arch
        net = build_net(cfg).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        critic = d_opt = None
        if cfg.dis_weight:
            critic = Critic(arch["ndim"], arch["n_classes"], cfg.critic_widths).to(device)
            d_opt = torch.optim.RMSprop(critic.parameters(), lr=cfg.lr / 4)
        rate = ContextRate(arch["latent_channels"], arch["ndim"]).to(device) \
            if cfg.compress else None
        teacher = None
        if cfg.distil_weight:
            # The uncompressed segmentor on the image teaches s on g(latents); it stays frozen.
            teacher = load_checkpoint(Path(cfg.teacher), best=True)[0].requires_grad_(False)
            teacher.to(device)
        return cls(net, opt, one_cycle(opt, cfg.lr, cfg.steps), critic, d_opt, rate, teacher)

    def modules(self) -> dict:
        return {k: getattr(self, k) for k in self.CHECKPOINTED if getattr(self, k) is not None}

    def start_from_parents(self, cfg: Recipe, device) -> None:
        """A new run's weights: a rate point's (``init``) from its parent run, which a wider
        recipe grows (``load_grown``); else s from the seg run (``init_segmentor``)."""
        if cfg.init:
            parent = read_checkpoint(Path(cfg.init), device)
            if parent.get("best"):  # the parent's validation pick, not its last step
                parent["net"] = parent["best"]["net"]
            for key in ("net", "critic", "rate"):
                if getattr(self, key) is not None and key in parent:
                    load_grown(getattr(self, key), parent[key], grow=key != "rate")
        elif cfg.init_segmentor:
            seg = load_checkpoint(Path(cfg.init_segmentor), best=True)[0]
            self.net.segmentor.load_state_dict(seg.state_dict())
        if cfg.init_compressor and not cfg.init:
            self.net.compressor.load_state_dict(model_compressor(cfg.init_compressor, cfg.arch))

    def step(self, cfg: Recipe, xb, tb, step: int, n_pix: int, report: bool = True) -> dict:
        """One C+g+s step with D fixed, then one D step; with ``report``, the losses as
        log.csv's columns (reading them waits for a GPU: only on the steps logged)."""
        # Forward passes in the recipe's precision; backward follows them, outside autocast.
        forward = functools.partial(torch.autocast, xb.device.type, torch.bfloat16,
                                    enabled=cfg.precision == "bf16")
        with forward():
            feats: list = []
            out_b, p, z = run_net(self.net, xb, features=feats)
            if cfg.target == "image":
                l_seg, prob = F.mse_loss(out_b, xb), None
            else:
                prob = torch.softmax(out_b.float(), 1)
                l_seg = loss_seg(prob, tb, cfg.dice_weight)
            loss = l_seg
            l_dis = l_cr = l_distil = torch.zeros(())
            if self.teacher is not None:
                t_feats: list = []
                with torch.no_grad():
                    t_logits = self.teacher(xb, t_feats)
                l_distil = loss_distil(out_b, t_logits, feats[0], t_feats[0])
                loss = loss + cfg.distil_weight * l_distil
            if self.critic is not None:
                self.critic.requires_grad_(False)  # D is fixed in this step; its own follows
                l_dis = loss_dis(self.critic, prob, tb)
                self.critic.requires_grad_(True)
                loss = loss + cfg.dis_weight * l_dis
            if self.rate is not None:
                l_cr = self.rate(p.float(), z, n_pix)
                if cfg.rate_weight:
                    ramp = min(1.0, step / max(1.0, cfg.rate_ramp * cfg.steps))
                    loss = loss + cfg.rate_weight * ramp * l_cr
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()
        if self.critic is not None:  # D step: maximise loss_dis with C and s fixed
            with forward():
                d_loss = -loss_dis(self.critic, prob.detach(), tb)
            self.d_opt.zero_grad()
            d_loss.backward()
            self.d_opt.step()
        if not report:
            return {}
        dice = float("nan")
        if prob is not None:
            dims = (0,) + tuple(range(2, prob.ndim))
            pf, tf = prob.detach()[:, 1:], tb[:, 1:]
            dice = float((2 * (pf * tf).sum(dims) / (pf.sum(dims) + tf.sum(dims) + 1e-6)).mean())
        return {"loss": loss.item(), "loss_seg": l_seg.item(), "loss_dis": l_dis.item(),
                "loss_cr_bpp": l_cr.item(), "loss_distil": l_distil.item(), "dice": dice}

    def validate(self, val, n_classes: int, n_pix: int) -> tuple[float, list, float]:
        """(mean Dice, Dice per class, estimated bpp or NaN) of the validation cases."""
        scores_ = evaluate(self.net, val[0], val[1], n_classes)
        bpp = float("nan")
        if self.rate is not None:
            with torch.no_grad():
                self.net.eval()
                self.rate.eval()
                _, p_, z_ = run_net(self.net, val[0], stochastic=False)
                bpp = float(self.rate(p_, z_, n_pix))
                self.net.train()
                self.rate.train()
        return float(np.mean(scores_["dice"])), scores_["dice"], bpp


def model_compressor(name: str, arch: dict) -> dict:
    """The C weights of a model (name, id or .sgm file) as a state dict for this recipe's C;
    ValueError where its C is not the one ``arch`` builds."""
    from .. import zoo
    from ..architecture import Architecture
    model = zoo.load_file(Path(name)) if name.endswith(".sgm") else zoo.find(name)
    theirs = model.manifest.architecture.compressor
    ours = Architecture.from_json(arch).compressor
    for key in theirs:
        if theirs[key] != ours[key]:
            raise ValueError(f"{model.name}'s C has {key} {theirs[key]}, this recipe's "
                             f"{ours[key]}: its weights cannot start this run's C")
    prefix = "compressor."
    return {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in model.weights.items()
            if k.startswith(prefix)}


class RunFolder:
    """A run's folder: config.json, checkpoint.pt (every module's state and the random states:
    resumable), log.csv and val.csv, which a resumed run cuts back to its checkpoint's step."""

    def __init__(self, out: Path, cfg: Recipe, device):
        self.out, self.cfg = out, cfg
        out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path, self.log_path, self.val_path = (out / "checkpoint.pt", out / "log.csv",
                                                         out / "val.csv")
        self.resumed = read_checkpoint(self.ckpt_path, device) \
            if self.ckpt_path.exists() else None
        self._log = self._writer = None
        if self.resumed is not None:
            # Recipe.load gives keys an older run was started without their meaning then.
            started = Recipe.load(self.resumed["config"])
            changed = [f.name for f in dataclasses.fields(Recipe)
                       if f.name not in RESUME_IGNORES
                       and getattr(started, f.name) != getattr(cfg, f.name)]
            if changed:
                was = ", ".join(f"{k}={getattr(started, k)}" for k in changed)
                raise ValueError(f"{out} holds a run started with {was}; use another --out")

    def restore(self, parts: _Parts, gen: torch.Generator) -> tuple[int, float, dict | None]:
        """The checkpoint's states into ``parts`` and ``gen``; (step, elapsed s, best)."""
        ck = self.resumed
        for key, module in parts.modules().items():
            module.load_state_dict(ck[key])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["rng"])
        return ck["step"], ck["elapsed"], ck.get("best")

    def save(self, parts: _Parts, gen, step: int, elapsed: float, best) -> None:
        state = {k: m.state_dict() for k, m in parts.modules().items()}
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save({**state, "config": self.cfg.resolve(), "gen": gen.get_state(),
                    "rng": torch.get_rng_state(), "step": step, "elapsed": elapsed,
                    "best": best}, tmp)
        tmp.replace(self.ckpt_path)

    def open_logs(self, step: int) -> None:
        """config.json, and the logs with the rows after ``step`` dropped: those steps are
        about to be redone."""
        (self.out / "config.json").write_text(json.dumps(self.cfg.resolve(), indent=1) + "\n")
        kept, kept_val = ([self._rows_to(path, step) for path in (self.log_path,
                                                                  self.val_path)]
                          if step else ([], []))
        self._log = open(self.log_path, "w", newline="")
        self._writer = csv.writer(self._log)
        self._writer.writerow(LOG_COLUMNS)
        self._writer.writerows([r.get(c, "0") for c in LOG_COLUMNS] for r in kept)
        with open(self.val_path, "w", newline="") as f:
            csv.writer(f).writerows([VAL_COLUMNS]
                                    + [[r[c] for c in VAL_COLUMNS] for r in kept_val])

    @staticmethod
    def _rows_to(path: Path, step: int) -> list[dict]:
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f) if int(r["step"]) <= step]

    def log_row(self, row: dict) -> None:
        self._writer.writerow([row[c] if isinstance(row[c], int) else f"{row[c]:.5g}"
                               for c in LOG_COLUMNS])
        self._log.flush()

    def validation_row(self, step: int, mean: float, classes, bpp: float) -> float:
        with open(self.val_path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{mean:.5f}", " ".join(map(str, classes)),
                                    f"{bpp:.5g}"])
        return mean

    def close_logs(self) -> None:
        if self._log is not None:
            self._log.close()


class _StopFlag:
    """SIGINT and SIGTERM set ``signal`` instead of interrupting; the loop saves and stops
    after the step in flight, so no finished step is lost (main thread only)."""

    def __init__(self):
        self.signal, self._old = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._set)

    def _set(self, signum, frame):
        self.signal = signum

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def last_logged(log_path: Path) -> dict:
    """The last row of a run's log.csv, as numbers."""
    rows = list(csv.DictReader(open(log_path)))
    return {k: float(v) for k, v in rows[-1].items()} if rows else {}


def read_checkpoint(path: Path, device="cpu") -> dict:
    """A checkpoint (or any file of tensors that training writes) as ``torch.load`` reads it,
    tensors and plain values only; ValueError, in one line, for a file that is not one (a
    pickle of Python objects is refused unread: nothing in it runs)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:  # zip, pickle, truncation
        raise ValueError(f"{path}: not a file segcodec training wrote (it holds Python objects "
                         f"or is damaged: {type(exc).__name__}); not loaded") from exc


def load_checkpoint(path: Path, best: bool = False) -> tuple[nn.Module, Recipe]:
    """The trained network (eval mode) and config of a checkpoint: its last weights, or with
    ``best`` those that scored best on the validation cases (where the run kept them)."""
    return network_of(read_checkpoint(path), best)


def network_of(ck: dict, best: bool = False) -> tuple[nn.Module, Recipe]:
    """``load_checkpoint`` of a checkpoint already loaded (``torch.load``)."""
    cfg = Recipe.load(ck["config"])
    net = build_net(cfg)
    net.load_state_dict(ck["best"]["net"] if best and ck.get("best") else ck["net"])
    return net.eval(), cfg

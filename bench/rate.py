"""Rate against segmentation accuracy: every codec of bench/codecs.py (segcodec, Auto/Seg,
JPEG-2000, H.264, JPEG XL, lossless references, sending the labels).

    python -m bench rate --data ../shared/data [--tasks isic hippocampus] [--limit N]
                         [--codecs CODEC ...] [--models DIR ...] [--runs runs]
                         [--out bench/results]
    python -m bench rate --smoke --out /tmp/rate     # fixtures/, untrained nets, seconds

ISIC 2017 val (150 RGB images) and the seeded hippocampus test split (40 volumes).  Every rate
is whole-file bytes x 8 / the input's pixels (voxels), headers included.  Traditional codecs'
decoded images are segmented by the reference segmentor trained on uncompressed images
(``runs/<task>-seg``); segcodec files go through ``segcodec.encode`` / ``decode`` / the
label path of the public API, volumes with their NIfTI affine as a user's file has it.
Writes rate.json (every point), rate.md (tables, headline) and rate_<task>.png; a run of
some tasks, or with --codecs of some codecs, keeps the other rows of the rate.json there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from segcodec import metrics
from segcodec.train import data as training_data
from segcodec.train import loop

from . import codecs, references
from .common import (LABELS, NDIM, RESULTS, RUNS, TITLES, Sample, Segmentor, checkpoint, command,
                     machine, n_classes, register, task_pairs, timed, to_chw, untrained_segmentor,
                     write_outputs)

# Not a codec: the reference point, the original as stored, segmented by every reference.
UNCOMPRESSED = "uncompressed"
# How close to the uncompressed reference's Dice counts as no loss: the paper's criterion,
# and the stricter one.
PAPERS, NO_LOSS = 0.01, 0.005


# Reference segmentors, trained or (--smoke) untrained and seeded

def reference_segmentors(task: str, runs: Path, smoke: bool,
                         reference: Path | None = None) -> list[Segmentor]:
    """The shipped seg reference (or the seg run ``reference``, a folder or checkpoint), and
    the D1 one where ``runs`` holds it for the ablation (--smoke: an untrained seg one).
    FileNotFoundError without the shipped reference."""
    if smoke:
        return [untrained_segmentor(task, "seg")]
    if reference is not None:
        path = reference / "checkpoint.pt" if reference.is_dir() else reference
        return [Segmentor(*loop.load_checkpoint(path, best=True), "seg")]
    out = [references.load(task)]
    path = checkpoint(runs, task, "d1")
    if path.exists():
        out.append(Segmentor(*loop.load_checkpoint(path, best=True), "d1"))
    return out


# One pass over the cases, every codec per case

def measure(task: str, samples: list[Sample], segs: list[Segmentor], ready: list[codecs.Codec],
            smoke: bool, uncompressed: bool = True) -> list[dict]:
    """Rows of every (codec, setting, segmentor) of the ``ready`` codecs on ``samples``, and of
    the uncompressed reference where ``uncompressed``."""
    ndim = NDIM[task]
    classes = n_classes(task)
    ref = segs[0]  # the shipped seg reference segments every codec's decoded image
    points: dict[tuple, dict] = {}

    def add(codec, setting, segmentor, sample, size, labels, enc=None, dec=None, seg=None):
        key = (codec, setting, segmentor)
        p = points.setdefault(key, {"bytes": [], "bpp": [], "dice": [], "iou": [],
                                    "encode_s": [], "decode_s": [], "segment_s": []})
        p["bytes"].append(size)
        p["bpp"].append(size * 8 / sample.pixels)
        s = metrics.scores(labels, sample.truth, classes)
        p["dice"].append(s["dice"])
        p["iou"].append(s["iou"])
        for k, v in (("encode_s", enc), ("decode_s", dec), ("segment_s", seg)):
            if v is not None:
                p[k].append(v)

    def one(sample):
        original = None  # the reference's labels of the original, and their time
        for s in segs if uncompressed else []:
            labels, t_seg = timed(s, sample.chw, sample.truth.shape)
            # the stored pixels' bytes: 24 bits for RGB, the NIfTI's dtype for a volume (some
            # cases are uint8, most float32), so the setting is not per-case
            add(UNCOMPRESSED, "raw", s.name, sample, sample.stored.nbytes, labels, seg=t_seg)
            original = original or (labels, t_seg)
        for codec in ready:
            for setting in codec.settings(smoke):
                data, t_enc = timed(codec.encode, sample, setting)
                segmentor, t_dec = ref.name, None
                if codec.output == "original":
                    original = original or timed(ref, sample.chw, sample.truth.shape)
                    labels, t_seg = original
                elif codec.output == "image":
                    image, t_dec = timed(codec.decode, data, sample)
                    labels, t_seg = timed(ref, to_chw(image, ndim), sample.truth.shape)
                else:
                    decoded, t_dec = timed(codec.decode, data, sample)
                    segmentor = codec.segmentor
                    labels, t_seg = (timed(codec.segment, decoded, sample) if codec.segment
                                     else (decoded, None))
                add(codec.name, setting, segmentor, sample, len(data), labels, t_enc, t_dec,
                    t_seg)

    if samples:
        one(samples[0])  # warm-up (numba, x264 and torch first calls), discarded
        points.clear()
    for i, sample in enumerate(samples):
        one(sample)
        print(f"\r{task}: {i + 1}/{len(samples)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    labels = LABELS[task][1:]
    rows = []
    for (codec, setting, segmentor), p in points.items():
        dice, iou = np.mean(p["dice"], 0), np.mean(p["iou"], 0)
        ms = {k.replace("_s", "_ms"): round(1e3 * float(np.mean(v)), 3) if v else None
              for k, v in p.items() if k.endswith("_s")}
        rows.append({"task": task, "codec": codec, "setting": setting, "segmentor": segmentor,
                     "cases": len(p["bpp"]), "mean_bytes": round(float(np.mean(p["bytes"])), 1),
                     "mean_bpp": float(f"{np.mean(p['bpp']):.7g}"),
                     "dice": dict(zip(labels, np.round(dice, 4).tolist())),
                     "mean_dice": round(float(dice.mean()), 4),
                     "iou": dict(zip(labels, np.round(iou, 4).tolist())),
                     "mean_iou": round(float(iou.mean()), 4), **ms,
                     "case_bytes": p["bytes"]})
    return rows


# Headline: segcodec against the traditional curves

def curves(rows) -> list[str]:
    """The image codecs with points in ``rows``, in registry order: segcodec's peers."""
    present = {r["codec"] for r in rows}
    return [c.name for c in codecs.CODECS if c.output == "image" and c.name in present]


def _curve(rows, codec):
    pts = sorted((r["mean_bpp"], r["mean_dice"]) for r in rows if r["codec"] == codec)
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def bpp_at_dice(bpp, dice, target):
    """(bpp, note): the lowest rate at which the curve reaches ``target`` (log-linear between
    points); None if it never does; its lowest rate, an upper bound, if it starts above."""
    if not len(bpp) or dice.max() < target:
        return None, "not reached"
    i = int(np.argmax(dice >= target))
    if i == 0:
        return float(bpp[0]), "reached at its lowest rate: an upper bound"
    f = (target - dice[i - 1]) / (dice[i] - dice[i - 1])
    return float(np.exp(np.log(bpp[i - 1]) + f * (np.log(bpp[i]) - np.log(bpp[i - 1])))), ""


def dice_at_bpp(bpp, dice, target):
    """The curve's Dice at ``target`` bpp (log-linear); below its lowest rate, its lowest."""
    if not len(bpp):
        return None, "no points"
    if target <= bpp[0]:
        return float(dice[0]), f"at its lowest {bpp[0]:.4f} bpp"
    if target >= bpp[-1]:
        return float(dice[-1]), f"at its highest {bpp[-1]:.4f} bpp"
    return float(np.interp(np.log(target), np.log(bpp), dice)), ""


def headline(rows) -> list[dict]:
    out = []
    for r in rows:
        if r["codec"] != "segcodec":
            continue
        task_rows = [x for x in rows if x["task"] == r["task"]]
        for codec in curves(task_rows):
            bpp, dice = _curve(task_rows, codec)
            at, note = bpp_at_dice(bpp, dice, r["mean_dice"])
            d, dnote = dice_at_bpp(bpp, dice, r["mean_bpp"])
            out.append({"task": r["task"], "segcodec": r["setting"], "against": codec,
                        "segcodec_bpp": r["mean_bpp"], "segcodec_dice": r["mean_dice"],
                        "codec_bpp_at_equal_dice": at and round(at, 5),
                        "bits_ratio": at and round(at / r["mean_bpp"], 2), "ratio_note": note,
                        "codec_dice_at_equal_bpp": d and round(d, 4), "dice_note": dnote})
    return out


def reference_criterion(rows, margin: float = PAPERS) -> list[dict]:
    """The paper's criterion: the bits each codec needs to come within ``margin`` Dice of
    the uncompressed reference (the ``seg`` row), per task; segcodec's models by their own
    point, the peers by their curve."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        ref = next((r for r in rows if r["task"] == task and r["codec"] == UNCOMPRESSED
                    and r["segmentor"] == "seg"), None)
        if ref is None:
            continue
        target = ref["mean_dice"] - margin
        task_rows = [x for x in rows if x["task"] == task]
        for codec in curves(task_rows):
            bpp, dice = _curve(task_rows, codec)
            at, note = bpp_at_dice(bpp, dice, target)
            out.append({"task": task, "codec": codec, "reference_dice": ref["mean_dice"],
                        "target_dice": round(target, 4), "bpp": at and round(at, 5),
                        "note": note})
        for r in rows:
            if r["task"] == task and r["codec"] == "segcodec":
                out.append({"task": task, "codec": f"segcodec {r['setting']}",
                            "reference_dice": ref["mean_dice"], "target_dice": round(target, 4),
                            "bpp": r["mean_bpp"], "dice": r["mean_dice"],
                            "note": "meets it" if r["mean_dice"] >= target else
                            f"short by {target - r['mean_dice']:.4f} Dice"})
    return out


def best_peers(headlines, within) -> list[dict]:
    """Per segcodec model: the peer needing the fewest bits at its Dice, and per margin of
    ``within`` ({margin: reference_criterion rows}) the peer needing the fewest bits to come
    that close to the reference, beside the model's own rate and whether it meets it."""
    out = []
    for h in headlines:
        if h["against"] != next(x["against"] for x in headlines if x["task"] == h["task"]):
            continue  # one row per model: its first peer's
        mine = [x for x in headlines if x["task"] == h["task"] and x["segcodec"] == h["segcodec"]
                and x["codec_bpp_at_equal_dice"] is not None]
        best = min(mine, key=lambda x: x["codec_bpp_at_equal_dice"], default=None)
        row = {"task": h["task"], "segcodec": h["segcodec"], "segcodec_bpp": h["segcodec_bpp"],
               "segcodec_dice": h["segcodec_dice"],
               "equal_dice": best and {"peer": best["against"],
                                       "bpp": best["codec_bpp_at_equal_dice"],
                                       "bits_ratio": best["bits_ratio"],
                                       "note": best["ratio_note"]}}
        for margin, crit in within.items():
            peers = [c for c in crit if c["task"] == h["task"] and c["bpp"] is not None
                     and not c["codec"].startswith("segcodec")]
            ours = next((c for c in crit if c["task"] == h["task"]
                         and c["codec"] == f"segcodec {h['segcodec']}"), None)
            if ours is None:  # no uncompressed reference measured for this task
                continue
            top = min(peers, key=lambda c: c["bpp"], default=None)
            row[f"within_{margin}"] = {"segcodec_meets": ours["note"] == "meets it",
                                       "peer": top and top["codec"], "bpp": top and top["bpp"],
                                       "note": top and top["note"]}
        out.append(row)
    return out


# Outputs

def _fmt(v, nd=4):
    return "—" if v is None else f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def markdown(result: dict) -> str:
    commands = sorted(set(result.get("commands", {}).values())) or [result["command"]]
    lines = ["# Rate against Dice", "", *(f"`{c}`" for c in commands), "",
             f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, "
             f"torch {result['machine']['torch']} ({result['machine']['torch_threads']} "
             f"threads).  bpp = whole-file bytes x 8 / input pixels, headers included; "
             f"traditional codecs are segmented by the `seg` reference trained on "
             f"uncompressed images.", ""]
    for task in result["tasks"]:
        rows = [r for r in result["rows"] if r["task"] == task]
        if not rows:
            continue
        classes = list(rows[0]["dice"])
        title = result.get("titles", {}).get(task) or TITLES.get(task, task)
        lines += [f"## {title} ({rows[0]['cases']} cases)", "",
                  "| codec | setting | segmentor | bytes | bpp | "
                  + " | ".join(f"Dice {c}" for c in classes)
                  + (" | mean Dice" if len(classes) > 1 else "")
                  + " | mean IoU | encode ms | decode ms | segment ms |",
                  "|---" * (9 + len(classes) + (len(classes) > 1)) + "|"]
        for r in rows:
            cells = [r["codec"], _fmt(r["setting"]), r["segmentor"] or "—",
                     f"{r['mean_bytes']:.1f}", f"{r['mean_bpp']:.4g}",
                     *(f"{v:.4f}" for v in r["dice"].values())]
            if len(classes) > 1:
                cells.append(f"{r['mean_dice']:.4f}")
            cells += [f"{r['mean_iou']:.4f}", *(_fmt(r[k], 3) for k in
                                                 ("encode_ms", "decode_ms", "segment_ms"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        heads = [h for h in result["headline"] if h["task"] == task]
        if heads:
            lines += ["Headline (log-linear interpolation along each codec's curve):", "",
                      "| segcodec | bpp | Dice | against | codec bpp at equal Dice | bits "
                      "ratio | codec Dice at equal bpp |", "|---" * 7 + "|"]
            for h in heads:
                ratio = h["ratio_note"] if h["bits_ratio"] is None else \
                    f"{h['bits_ratio']:.1f}x" + (f" ({h['ratio_note']})" if h["ratio_note"]
                                                 else "")
                dice = _fmt(h["codec_dice_at_equal_bpp"]) + (f" ({h['dice_note']})"
                                                             if h["dice_note"] else "")
                lines.append(f"| {h['segcodec']} | {h['segcodec_bpp']:.4f} | "
                             f"{h['segcodec_dice']:.4f} | {h['against']} | "
                             f"{_fmt(h['codec_bpp_at_equal_dice'])} | {ratio} | {dice} |")
            lines.append("")
        crit = [c for c in result.get("within_reference", []) if c["task"] == task]
        strict = {c["codec"]: c for c in result.get("no_loss", []) if c["task"] == task}
        if crit:
            ref = crit[0]["reference_dice"]
            lines += [f"Bits to come within 0.01 Dice of the uncompressed reference ({ref:.4f};"
                      " the paper's criterion) and within 0.005 (no loss):", "",
                      "| codec | bpp within 0.01 | note | bpp within 0.005 | note |",
                      "|---|---|---|---|---|"]
            for c in crit:
                d = strict.get(c["codec"], {})
                lines.append(f"| {c['codec']} | {_fmt(c['bpp'])} | {c['note'] or '—'} | "
                             f"{_fmt(d.get('bpp'))} | {d.get('note') or '—'} |")
            lines.append("")
        best = [b for b in result.get("best_peers", []) if b["task"] == task]
        if best:
            lines += ["The best peer for each segcodec model (fewest bits):", "",
                      "| segcodec | bpp | Dice | at equal Dice | within 0.01 | within 0.005 |",
                      "|---" * 6 + "|"]
            for b in best:
                eq = b["equal_dice"]
                cells = ["—" if eq is None else
                         f"{eq['peer']} {eq['bpp']:.4g} bpp ({eq['bits_ratio']:.1f}x"
                         + (", an upper bound" if "upper bound" in eq["note"] else "") + ")"]
                for margin in (PAPERS, NO_LOSS):
                    w = b.get(f"within_{margin}")
                    if w is None:
                        cells.append("no reference row")
                        continue
                    mine = "meets it" if w["segcodec_meets"] else "segcodec does not"
                    cells.append(f"{mine}; " + ("no peer does" if w["peer"] is None else
                                                f"{w['peer']} {w['bpp']:.4g} bpp"))
                lines.append(f"| {b['segcodec']} | {b['segcodec_bpp']:.4f} | "
                             f"{b['segcodec_dice']:.4f} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


# The codecs that give labels, each one point per setting: marker and colour.
POINT_STYLES = {"autoseg": ("D", "tab:purple"), "labels": ("^", "tab:brown"),
                "segcodec": ("*", "tab:red")}


def plot(rows, task: str, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r["task"] == task]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for codec, style in zip(curves(rows), ("o-", "s-", "v-", "p-", "h-", "x-")):
        bpp, dice = _curve(rows, codec)
        ax.plot(bpp, dice, style, ms=3, label=codecs.by_name(codec).title + " + seg")
    for r in rows:
        if r["codec"] == UNCOMPRESSED:
            ax.axhline(r["mean_dice"], ls="--" if r["segmentor"] == "seg" else ":", c="gray",
                       lw=0.8, label=f"uncompressed ({r['segmentor']})")
    for codec, (marker, colour) in POINT_STYLES.items():
        pts = [r for r in rows if r["codec"] == codec]
        if pts:
            ax.plot([r["mean_bpp"] for r in pts], [r["mean_dice"] for r in pts], marker,
                    c=colour, ms=9 if codec == "segcodec" else 6, ls="none",
                    label=codecs.by_name(codec).title)
            if codec == "segcodec":
                for r in pts:
                    ax.annotate(r["setting"], (r["mean_bpp"], r["mean_dice"]), fontsize=7,
                                xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("mean Dice" if task == "hippocampus" else "Dice")
    ax.set_title(title)
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    names = [UNCOMPRESSED, *(c.name for c in codecs.CODECS)]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="../shared/data (not needed with --smoke)")
    ap.add_argument("--tasks", nargs="+", choices=list(NDIM), default=list(NDIM))
    ap.add_argument("--dataset", type=Path, metavar="DIR",
                    help="instead of the shipped tasks, a data set folder as `segcodec train "
                         "--data` reads it: its test cases (imagesTs/), else its carved "
                         "validation split, segmented by --reference; segcodec's rows are its "
                         "models in --models")
    ap.add_argument("--reference", type=Path, metavar="RUN",
                    help="with --dataset: the seg run (folder or checkpoint.pt) that segments "
                         "the peers' decoded images, e.g. runs/NAME-seg")
    ap.add_argument("--codecs", nargs="+", choices=names, metavar="CODEC",
                    help=f"only these ({', '.join(names)}); the other codecs' rows of "
                         f"OUT/rate.json are kept (default: all)")
    ap.add_argument("--limit", type=int, help="only the first N test cases of each task")
    ap.add_argument("--smoke", action="store_true",
                    help="fixtures/, untrained seeded networks, 2 rate points per codec")
    ap.add_argument("--models", type=Path, nargs="*",
                    help="extra folders of .sgm models (default: RUNS/models if present)")
    ap.add_argument("--runs", type=Path, default=RUNS)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "segcodec")
    ap.add_argument("--threads", type=int,
                    help="torch threads (default: torch's; 1 with --smoke)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.dataset is not None:
        if args.reference is None or not args.reference.exists():
            ap.error("--dataset needs --reference RUN, the data set's trained seg run")
        if args.smoke:
            ap.error("--dataset measures trained models: not with --smoke")
        try:
            args.tasks = [register(args.dataset)]
        except (OSError, ValueError) as exc:
            ap.error(f"--dataset {args.dataset}: {exc}")
    elif args.reference is not None:
        ap.error("--reference is the reference of a --dataset")
    elif not args.smoke and args.data is None:
        ap.error("--data is required (or --smoke, or --dataset)")
    elif not args.smoke:
        for task in args.tasks:
            training_data.check_root(args.data, task)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or (1 if args.smoke else threads))
    try:
        return _run(args, command("rate", argv))
    finally:
        torch.set_num_threads(threads)  # main() may run inside a test process


def _run(args, command_line: str) -> dict:
    if args.models is None:  # smoke: the built-in models only, whatever runs/ holds
        found = (args.runs / "models").is_dir() and not args.smoke
        args.models = [args.runs / "models"] if found else []
    chosen = [c for c in codecs.CODECS if args.codecs is None or c.name in args.codecs]
    rows, test_cases = [], {}
    for task in args.tasks:
        samples = [Sample.read(task, *p)
                   for p in task_pairs(task, None if args.smoke else args.data)[:args.limit]]
        try:
            segs = reference_segmentors(task, args.runs, args.smoke, args.reference)
        except FileNotFoundError as exc:
            sys.exit(f"bench rate: error: {exc}")
        setup = codecs.Setup(task, samples, segs[0], args.smoke, args.data, args.runs,
                             args.cache, args.models)
        ready = [r for r in (c.ready(setup) for c in chosen) if r is not None]
        rows += measure(task, samples, segs, ready, args.smoke,
                        args.codecs is None or UNCOMPRESSED in args.codecs)
        test_cases[task] = {"names": [s.name for s in samples],
                            "pixels": [s.pixels for s in samples]}
    settings = {k: v for c in chosen for k, v in c.provenance(args.smoke).items()}
    commands = {task if args.codecs is None else f"{task} {c}": command_line
                for task in args.tasks for c in args.codecs or [None]}
    previous, titles = args.out / "rate.json", {}
    if previous.exists():
        old = json.loads(previous.read_text())
        titles = old.get("titles", {})
        rows, test_cases, commands, settings = merge(old, args, rows, test_cases, commands,
                                                     settings)
    result = {
        "command": command_line, "commands": commands,
        "machine": machine(),
        "settings": {**settings, "smoke": args.smoke, "limit": args.limit},
        "tasks": [t for t in NDIM if t in test_cases] + [t for t in test_cases if t not in NDIM],
        "titles": {t: TITLES.get(t) or titles.get(t, t) for t in test_cases},
        "cases": test_cases, "rows": rows,
        "headline": headline(rows), "within_reference": reference_criterion(rows),
        "no_loss": reference_criterion(rows, NO_LOSS),
    }
    result["best_peers"] = best_peers(result["headline"], {
        PAPERS: result["within_reference"], NO_LOSS: result["no_loss"]})
    write_outputs(args.out, "rate", result, markdown(result))
    for task in result["tasks"]:
        plot(rows, task, result["titles"][task], args.out / f"rate_{task}.png")
    return result


def merge(old: dict, args, rows, test_cases, commands, settings):
    """This run's outputs with what the previous rate.json of the same kind (smoke or not)
    measured and this run did not: the other tasks, and with --codecs the other codecs."""
    if old["settings"]["smoke"] != args.smoke:
        return rows, test_cases, commands, settings
    old_commands = old.get("commands") or {t: old["command"] for t in old["tasks"]}
    kept = [t for t in old["tasks"] if t not in args.tasks]
    partial = [t for t in old["tasks"] if t in args.tasks and args.codecs is not None]
    for task in partial:
        if old["cases"][task]["names"] != test_cases[task]["names"]:
            sys.exit(f"bench rate: error: {task}'s cases differ from those of {args.out}/"
                     f"rate.json (--limit?); rerun every codec, or the same cases")
    others = [r for r in old["rows"] if r["task"] in partial and r["codec"] not in args.codecs]
    order = [UNCOMPRESSED, *(c.name for c in codecs.CODECS)]

    # The tasks where they were (a task run anew after the kept ones), and the codecs of a
    # task measured now in registry order; the rows of a kept task as they were.
    tasks = [t for t in dict.fromkeys(r["task"] for r in old["rows"]) if t in kept + partial]
    tasks += [t for t in args.tasks if t not in tasks]

    def position(row):
        codec = order.index(row["codec"]) if row["codec"] in order else len(order)
        return tasks.index(row["task"]), 0 if row["task"] in kept else codec

    rows = sorted([r for r in old["rows"] if r["task"] in kept] + others + rows, key=position)
    test_cases = {**test_cases, **{t: old["cases"][t] for t in kept}}
    # A command stands for its task ("isic") or for one codec of it ("isic jpegxl"); a run of
    # every codec of a task replaces all of the task's.
    rerun = set(args.tasks) - set(partial)
    commands = {**commands, **{k: v for k, v in old_commands.items()
                               if k.split()[0] not in rerun and k not in commands}}
    if partial:
        settings = {**{k: v for k, v in old["settings"].items() if k not in ("smoke", "limit")},
                    **settings}
    return rows, test_cases, commands, settings


if __name__ == "__main__":
    main()

"""Rate against segmentation accuracy: segcodec, Auto/Seg, JPEG 2000, H.264 and lossless.

    python -m bench rate --data ../shared/data [--tasks isic hippocampus] [--limit N]
                         [--models DIR ...] [--runs runs] [--out bench/results]
    python -m bench rate --smoke --out /tmp/rate     # fixtures/, untrained nets, seconds

ISIC 2017 val (150 RGB images) and the seeded hippocampus test split (40 volumes).  Every rate
is whole-file bytes x 8 / the input's pixels (voxels), headers included.  Traditional codecs'
decoded images are segmented by the reference segmentor trained on uncompressed images
(``runs/<task>-seg``); segcodec files go through ``segcodec.encode`` / ``decode`` / the
label path of the public API, volumes with their NIfTI affine as a user's file has it.
Writes rate.json (every point), rate.md (tables, headline) and rate_<task>.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

import segcodec
from segcodec import api, bits, container, entropy, labelcodec, metrics, modelfiles, zoo
from segcodec.train import data as datasets
from segcodec.train import export, loop, recipes
from segcodec.transforms import labels_from_logits, normalise, resample

from . import codecs, references
from .common import (NDIM, PEERS, RESULTS, RUNS, Segmentor, checkpoint, command,
                     fixture_pairs, from_chw, machine, n_classes, timed, to_chw, untrained,
                     untrained_segmentor, write_outputs)

J2K_BPP = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)
H264_CRF = (51, 48, 45, 42, 39, 36, 33, 30, 25, 20)
SMOKE_J2K_BPP, SMOKE_H264_CRF = (0.05, 0.2), (45, 30)
TITLES = {"isic": "ISIC 2017 val", "hippocampus": "hippocampus test split"}


class Case:
    """One test image: the array a user would code, its labels, geometry and raw size."""

    def __init__(self, task: str, image_path: Path, label_path: Path):
        image, self.truth = datasets.read_pair(image_path, label_path)
        self.name = image_path.name
        self.chw = image
        self.array = from_chw(image, NDIM[task])
        self.affine = None
        if NDIM[task] == 2:
            self.raw_bits = 24
        else:
            import nibabel as nib
            nii = nib.load(image_path)
            self.affine = nii.affine
            self.stored = self.array.astype(nii.get_data_dtype())
            self.raw_bits = 8 * self.stored.dtype.itemsize
        self.pixels = self.truth.size


# Networks, trained or (--smoke) untrained and seeded

def reference_segmentors(task: str, runs: Path, smoke: bool) -> list[Segmentor]:
    """The shipped seg reference, and the D1 one where ``runs`` holds it for the ablation
    (--smoke: an untrained seg one).  FileNotFoundError without the shipped reference."""
    if smoke:
        return [untrained_segmentor(task, "seg")]
    out = [references.load(task)]
    path = checkpoint(runs, task, "d1")
    if path.exists():
        out.append(Segmentor(*loop.load_checkpoint(path, best=True), "d1"))
    return out


class AutoSeg:
    """Auto/Seg: C and an image decoder; the reconstruction is segmented by the seg reference.

    Its latents are range coded under an integer table fitted on the training latents, and a
    file is charged the header a segcodec file of the same input has (CRC included).
    """

    def __init__(self, net, cfg, table, seg: Segmentor):
        self.net, self.cfg, self.table, self.seg = net, cfg, table, seg
        self.ndim = cfg.arch["ndim"]

    @classmethod
    def load(cls, task, runs, data, cache, smoke, seg: Segmentor, cases):
        if smoke:  # no training set: fit the table on the fixtures themselves
            net, cfg = untrained(f"{task}-autoseg", seg.cfg.normalisation)
            x = torch.cat([seg.grid(c.chw) for c in cases])
        else:
            path = checkpoint(runs, task, "autoseg")
            if not path.exists():
                print(f"note: {path} missing; no Auto/Seg row for {task}", file=sys.stderr)
                return None
            net, cfg = loop.load_checkpoint(path)
            if cfg.normalisation != seg.cfg.normalisation:
                print(f"note: {task}-autoseg and {task}-seg normalise differently; the seg "
                      f"net gets Auto/Seg's reconstruction as is", file=sys.stderr)
            x = datasets.cached_set(cfg, data, "train", cache)[0]
        table = entropy.fit_table(export.training_latents(net, x), cfg.arch["ndim"])
        return cls(net, cfg, table, seg)

    @torch.no_grad()
    def encode(self, case: Case) -> bytes:
        x = resample(normalise(case.chw, self.cfg.normalisation),
                     self.cfg.arch["work_shape"])
        z = bits.threshold(self.net.compressor(x)[0].numpy())
        header = container.Header(model_id=bytes(container.MODEL_ID_BYTES),
                                  shape=case.truth.shape, channels=case.chw.shape[0],
                                  latent_shape=z.shape, affine=case.affine)
        return container.write(header, entropy.encode(z, self.table, self.ndim))

    @torch.no_grad()
    def decode(self, data: bytes) -> torch.Tensor:
        header, payload = container.read(data)
        z = entropy.decode(payload, self.table, header.latent_shape, self.ndim)
        return self.net.reconstructor(torch.from_numpy(z.astype(np.float32))[None])

    @torch.no_grad()
    def segment(self, recon: torch.Tensor, shape) -> np.ndarray:
        return labels_from_logits(self.seg.net(recon), shape)


def segcodec_models(task: str, folders: list[Path]) -> list[zoo.Model]:
    """Installed models plus those in ``folders``, for the task's ndim and channel count."""
    known = {d.resolve() for d in zoo.model_dirs()}
    extra = [str(f) for f in folders if f.is_dir() and f.resolve() not in known]
    for f in folders:
        if not f.is_dir():
            print(f"note: model folder {f} missing", file=sys.stderr)
    if extra:
        old = os.environ.get(zoo.PATH_ENV, "")
        os.environ[zoo.PATH_ENV] = os.pathsep.join([p for p in [old, *extra] if p])
        zoo.reload()
    channels = 3 if task == "isic" else 1
    deprecated = set(modelfiles.read_index()["deprecated"])  # kept to decode old files only
    return [m for m in sorted(zoo.installed().values(), key=lambda m: m.name)
            if m.ndim == NDIM[task] and m.in_channels == channels and m.name not in deprecated]


def model_labels(models: list[zoo.Model]) -> dict[str, str]:
    """Model id -> its training recipe (e.g. ``isic-d4-r2``) where that is a recipe name and
    unique among ``models``, else the model's name."""
    def recipe(m):
        r = str(m.manifest.get("training", {}).get("recipe", ""))
        try:
            recipes.config(r)
            return r
        except ValueError:  # e.g. the provisional models' trainer module
            return None
    found = [recipe(m) for m in models]
    return {m.model_id.hex(): r if r and found.count(r) == 1 else m.name
            for m, r in zip(models, found)}


# One pass over the cases, every codec per case

def measure(task: str, cases: list[Case], segs: list[Segmentor], models, autoseg,
            j2k_rates, crfs) -> list[dict]:
    ndim = NDIM[task]
    classes = n_classes(task)
    names = model_labels(models)
    points: dict[tuple, dict] = {}

    def add(codec, setting, segmentor, case, size, labels, enc=None, dec=None, seg=None):
        key = (codec, setting, segmentor)
        p = points.setdefault(key, {"bytes": [], "bpp": [], "dice": [], "iou": [],
                                    "encode_s": [], "decode_s": [], "segment_s": []})
        p["bytes"].append(size)
        p["bpp"].append(size * 8 / case.pixels)
        s = metrics.scores(labels, case.truth, classes)
        p["dice"].append(s["dice"])
        p["iou"].append(s["iou"])
        for k, v in (("encode_s", enc), ("decode_s", dec), ("segment_s", seg)):
            if v is not None:
                p[k].append(v)

    def traditional(case, codec, setting, enc_fn, dec_fn):
        data, t_enc = timed(enc_fn, case.array, setting)
        image, t_dec = timed(dec_fn, data, case.array.shape, case.array.dtype)
        ref = segs[0]  # the shipped seg reference segments every codec's output
        labels, t_seg = timed(ref, to_chw(image, ndim), case.truth.shape)
        add(codec, setting, ref.name, case, len(data), labels, t_enc, t_dec, t_seg)

    def one(case):
        for s in segs:
            labels, t_seg = timed(s, case.chw, case.truth.shape)
            # raw bits of the stored pixels: 24 for RGB, the NIfTI's dtype (some cases are
            # uint8, most float32), so the setting is not per-case
            add("uncompressed", "raw", s.name, case,
                case.pixels * case.raw_bits // 8, labels, seg=t_seg)
            if s is segs[0]:  # lossless: the labels of the original, only the size differs
                stored = case.array if ndim == 2 else case.stored
                refs = [("png", codecs.png_bytes, (stored,))] if ndim == 2 else \
                    [("nifti-gz", codecs.nifti_gz_bytes, (stored, case.affine))]
                for name, fn, args in refs + [("zstd", codecs.zstd_bytes, (stored,))]:
                    data, t_enc = timed(fn, *args)
                    add(name, "lossless", s.name, case, len(data), labels, t_enc, seg=t_seg)
        for bpp in j2k_rates:
            traditional(case, "jpeg2000", bpp, codecs.jpeg2000_encode, codecs.jpeg2000_decode)
        for crf in crfs:
            traditional(case, "h264", crf, codecs.h264_encode, codecs.h264_decode)
        for m in models:
            data, t_enc = timed(lambda: segcodec.encode(case.array, model=m,
                                                        kind=f"{ndim}d", affine=case.affine))
            decoded, t_dec = timed(segcodec.decode, data)
            labels, t_seg = timed(api.labels_from_latents, decoded, "cpu")
            add("segcodec", names[m.model_id.hex()], None, case, len(data), labels,
                t_enc, t_dec, t_seg)
        if autoseg:
            data, t_enc = timed(autoseg.encode, case)
            recon, t_dec = timed(autoseg.decode, data)
            labels, t_seg = timed(autoseg.segment, recon, case.truth.shape)
            add("autoseg", autoseg.cfg.name, "seg", case, len(data), labels,
                t_enc, t_dec, t_seg)
        data, t_enc = timed(lambda: labelcodec.encode(case.truth, classes,
                                                      affine=case.affine))
        labels, t_dec = timed(lambda: labelcodec.decode(data).labels)
        add("labels", "lossless", None, case, len(data), labels, t_enc, t_dec)

    if cases:
        one(cases[0])  # warm-up (numba, x264 and torch first calls), discarded
        points.clear()
    for i, case in enumerate(cases):
        one(case)
        print(f"\r{task}: {i + 1}/{len(cases)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    labels = recipes.TASKS[task]["labels"][1:]
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
        for codec in PEERS:
            bpp, dice = _curve([x for x in rows if x["task"] == r["task"]], codec)
            at, note = bpp_at_dice(bpp, dice, r["mean_dice"])
            d, dnote = dice_at_bpp(bpp, dice, r["mean_bpp"])
            out.append({"task": r["task"], "segcodec": r["setting"], "against": codec,
                        "segcodec_bpp": r["mean_bpp"], "segcodec_dice": r["mean_dice"],
                        "codec_bpp_at_equal_dice": at and round(at, 5),
                        "bits_ratio": at and round(at / r["mean_bpp"], 2), "ratio_note": note,
                        "codec_dice_at_equal_bpp": d and round(d, 4), "dice_note": dnote})
    return out


def reference_criterion(rows, margin: float = 0.01) -> list[dict]:
    """The paper's criterion: the bits each codec needs to come within ``margin`` Dice of
    the uncompressed reference (the ``seg`` row), per task; segcodec's models by their own
    point, the peers by their curve."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        ref = next((r for r in rows if r["task"] == task and r["codec"] == "uncompressed"
                    and r["segmentor"] == "seg"), None)
        if ref is None:
            continue
        target = ref["mean_dice"] - margin
        for codec in PEERS:
            bpp, dice = _curve([x for x in rows if x["task"] == task], codec)
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
        lines += [f"## {TITLES[task]} ({rows[0]['cases']} cases)", "",
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
        if crit:
            ref, target = crit[0]["reference_dice"], crit[0]["target_dice"]
            lines += [f"Within 0.01 Dice of the uncompressed reference ({ref:.4f}; the "
                      f"paper's criterion: target {target:.4f}):", "",
                      "| codec | bpp | note |", "|---|---|---|"]
            lines += [f"| {c['codec']} | {_fmt(c['bpp'])} | {c['note'] or '—'} |" for c in crit]
            lines.append("")
    return "\n".join(lines) + "\n"


def plot(rows, task: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r["task"] == task]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for codec, style in (("jpeg2000", "o-"), ("h264", "s-")):
        bpp, dice = _curve(rows, codec)
        if len(bpp):
            ax.plot(bpp, dice, style, ms=3, label={"jpeg2000": "JPEG 2000",
                                                   "h264": "H.264"}[codec] + " + seg")
    for r in rows:
        if r["codec"] == "uncompressed":
            ax.axhline(r["mean_dice"], ls="--" if r["segmentor"] == "seg" else ":", c="gray",
                       lw=0.8, label=f"uncompressed ({r['segmentor']})")
    for codec, marker, colour in (("autoseg", "D", "tab:purple"), ("labels", "^", "tab:brown"),
                                  ("segcodec", "*", "tab:red")):
        pts = [r for r in rows if r["codec"] == codec]
        if pts:
            ax.plot([r["mean_bpp"] for r in pts], [r["mean_dice"] for r in pts], marker,
                    c=colour, ms=9 if codec == "segcodec" else 6, ls="none",
                    label={"autoseg": "Auto/Seg", "labels": "send the labels (lossless)",
                           "segcodec": "segcodec"}[codec])
            if codec == "segcodec":
                for r in pts:
                    ax.annotate(r["setting"], (r["mean_bpp"], r["mean_dice"]), fontsize=7,
                                xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("mean Dice" if task == "hippocampus" else "Dice")
    ax.set_title(TITLES[task])
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="../shared/data (not needed with --smoke)")
    ap.add_argument("--tasks", nargs="+", choices=list(NDIM), default=list(NDIM))
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
    if not args.smoke and args.data is None:
        ap.error("--data is required (or --smoke)")
    if not args.smoke:
        for task in args.tasks:
            datasets.check_root(args.data, task)
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
    j2k_rates, crfs = (SMOKE_J2K_BPP, SMOKE_H264_CRF) if args.smoke else (J2K_BPP, H264_CRF)
    rows, test_cases = [], {}
    for task in args.tasks:
        pairs = fixture_pairs(task) if args.smoke else datasets.task_pairs(task, args.data, "test")
        cases = [Case(task, *p) for p in pairs[:args.limit]]
        try:
            segs = reference_segmentors(task, args.runs, args.smoke)
        except FileNotFoundError as exc:
            sys.exit(f"bench rate: error: {exc}")
        autoseg = AutoSeg.load(task, args.runs, args.data, args.cache, args.smoke, segs[0],
                               cases)
        models = segcodec_models(task, args.models)
        rows += measure(task, cases, segs, models, autoseg, j2k_rates, crfs)
        test_cases[task] = {"names": [c.name for c in cases],
                            "pixels": [c.pixels for c in cases]}
    commands = {task: command_line for task in args.tasks}
    previous = args.out / "rate.json"
    if previous.exists():  # a run of some tasks keeps the other tasks' rows
        old = json.loads(previous.read_text())
        kept = [t for t in old["tasks"] if t not in args.tasks and old["settings"]["smoke"]
                == args.smoke]
        rows = [r for r in old["rows"] if r["task"] in kept] + rows
        test_cases.update({t: old["cases"][t] for t in kept})
        commands.update({t: old.get("commands", {}).get(t, old["command"]) for t in kept})
    tasks = [t for t in NDIM if t in commands]
    result = {
        "command": command_line, "commands": commands,
        "machine": machine(),
        "settings": {"jpeg2000_target_bpp": list(j2k_rates), "h264_crf": list(crfs),
                     "h264_options": codecs.X264_OPTIONS, "h264_rgb": codecs.H264_RGB_PIX_FMT,
                     "smoke": args.smoke, "limit": args.limit},
        "tasks": tasks, "cases": test_cases, "rows": rows, "headline": headline(rows),
        "within_reference": reference_criterion(rows),
    }
    write_outputs(args.out, "rate", result, markdown(result))
    for task in tasks:
        plot(rows, task, args.out / f"rate_{task}.png")
    return result


if __name__ == "__main__":
    main()

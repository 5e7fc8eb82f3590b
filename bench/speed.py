"""Encode and decode speed, peak memory and scaling of segcodec against its peers.

    python -m bench speed [--data ../shared/data] [--smoke] [--repeat 20] [--threads 1]
                          [--out bench/results]

On the same inputs in the same run (a few ISIC val images and hippocampus test volumes with
--data, else fixtures/): segcodec's encode, segment and entropy decoding alone (the latents
back from the payload), against the encode and decode of its peers (``Codec.peer`` in
``bench/codecs.py``: JPEG-2000 through OpenJPEG, H.264 through x264, which runs preset
placebo, its best rate-distortion and its slowest).  Times are medians after one warm-up
call, reported as ratios segcodec / peer.  Also: where segcodec's encode time goes (stages
timed one by one with the shipped models), peak memory of every operation in a fresh
subprocess, and time against input size (table + log-log PNG).  The peers' rate setting is
the one whose Dice in rate.json is closest to segcodec's, when rate.json exists.  Writes
speed.json, speed.md and speed_scaling.png.  No timing is checked.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import segcodec
from segcodec import api, bits, container, entropy, zoo
from segcodec.coder import ENCODE_STAGES, Coder

from . import references
from .codecs import by_name, peer_settings, peers
from .common import (KIND, NDIM, REPO, RESULTS, Sample, and_join, command, interleaved,
                     load_samples, machine, median_seconds, model_names, samples, status_kb,
                     write_outputs)

# 3D stops at 128³: 256³ is more than a hippocampus model takes (its domain bounds the shape)
SIZES = {"2d": [256, 512, 1024], "3d": [32, 64, 128]}
SMOKE_SIZES = {"2d": [128, 256], "3d": [16, 32]}
SCALING_BUDGET_S = 20.0  # per operation and size: big volumes under x264 placebo take long


def setting(peer, settings: dict):
    """The peer's value in a task's ``peer_settings``."""
    return settings[peer.name][peer.param]


def coded(sample: Sample, settings: dict) -> dict[str, bytes]:
    # force=True: speed runs on scaled and synthetic sizes, outside the models' domains
    return {"segcodec": segcodec.encode(sample.array, kind=sample.kind, force=True),
            **{p.name: p.encode(sample, setting(p, settings)) for p in peers()}}


def operations(sample: Sample, settings: dict, files: dict[str, bytes]) -> dict:
    """Name -> zero-argument callable, for every timed operation on one input."""
    data = files["segcodec"]
    header, payload = container.read(data)
    model = zoo.get(header.model_id)
    ops = {
        "segcodec encode": lambda: segcodec.encode(sample.array, kind=sample.kind, force=True),
        "segcodec segment": lambda: segcodec.segment(data, device="cpu"),
        "segcodec entropy decode": lambda: Coder.of(model).read_latents(header, payload),
    }
    for p in peers():
        value, code = setting(p, settings), files[p.name]
        ops[f"{p.name} encode"] = lambda p=p, value=value: p.encode(sample, value)
        ops[f"{p.name} decode"] = lambda p=p, code=code: p.decode(code, sample)
    # What segment replaces: the reference segmentor on the uncompressed image
    seg = reference(sample.task)
    ops["reference segment"] = lambda: seg(sample.chw, sample.chw.shape[1:])
    return ops


@functools.cache
def reference(task: str):
    """The shipped uncompressed reference segmentor of a task (bench/references), once."""
    return references.load(task)


PEER_OPS = tuple(f"{p.name} {op}" for p in peers() for op in ("encode", "decode"))
RATIO_OPS = ("segcodec encode", "segcodec segment", "segcodec entropy decode", *PEER_OPS,
             "reference segment")
RATIOS = {  # name -> (segcodec operation, peer operation)
    f"{ours} / {peer.name} {theirs}": (f"segcodec {ours}", f"{peer.name} {theirs}")
    for peer in peers()
    for ours, theirs in (("encode", "encode"), ("segment", "decode"),
                         ("entropy decode", "decode"))
} | {"segment / reference segment": ("segcodec segment", "reference segment")}


def time_case(case: Sample, settings: dict, repeat: int) -> dict:
    files = coded(case, settings)
    ops = operations(case, settings, files)
    times = interleaved(ops, repeat)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"name": case.name, "task": case.task, "shape": list(case.array.shape),
            "bytes": {k: len(v) for k, v in files.items()},
            "median_ms": {k: round(1e3 * v, 3) for k, v in median.items()},
            "samples_ms": {k: [round(1e3 * x, 3) for x in v] for k, v in times.items()},
            "ratios": {k: round(median[a] / median[b], 4) for k, (a, b) in RATIOS.items()}}


def stage_medians(model: zoo.Model, run, repeat: int) -> dict[str, float]:
    """Median seconds of each stage that ``model``'s coder runs in ``run(coder)``, as its
    hook hears them over ``repeat`` runs."""
    heard: dict[str, list[float]] = {}
    coder = Coder.of(model, hook=lambda stage, s: heard.setdefault(stage, []).append(s))
    for _ in range(repeat):
        run(coder)
    return {k: statistics.median(v) for k, v in heard.items()}


def stages(case: Sample, repeat: int) -> dict:
    """segcodec's encode and segment, stage by stage: ``api.prepare`` (its checks are part of
    what encode pays) and what the coder's hook hears in ``api.encode_prepared`` and
    ``api.labels_of``, which ``api.encode`` and ``api.segment`` run.

    The entropy coding stage is also split into its contexts and range coding; its
    trailing-byte trim (format_spec §4) is the rest.
    """
    m = zoo.default_for(NDIM[case.task])
    data = segcodec.encode(case.array, kind=case.kind, force=True)
    header = container.read(data)[0]
    prepare = lambda: api.prepare(case.array, kind=case.kind, model=m, force=True)
    p = prepare()
    decoded = segcodec.decode(data)
    z = decoded.latents
    sym, ctx = bits.coding_order(z, header.ndim)
    e = {"validate (prepare)": median_seconds(prepare, repeat),
         **stage_medians(m, lambda c: api.encode_prepared(p, coder=c), repeat)}
    e["contexts (bits.coding_order)"] = median_seconds(
        lambda: bits.coding_order(z, header.ndim), repeat)
    e["range coding"] = median_seconds(lambda: entropy.range_code(sym, ctx, m.table), repeat)
    e["trim (computed)"] = max(0.0, e["entropy coding"] - e["contexts (bits.coding_order)"]
                                    - e["range coding"])
    s = {"container + entropy decode": median_seconds(lambda: segcodec.decode(data), repeat),
         **stage_medians(m, lambda c: api.labels_of([decoded], "cpu", c), repeat)}
    total = median_seconds(lambda: segcodec.encode(case.array, kind=case.kind, force=True),
                           repeat)
    parts = sum(e[k] for k in ("validate (prepare)", *ENCODE_STAGES))
    coding = e["threshold"] + e["entropy coding"]
    return {"case": case.name, "shape": list(case.array.shape),
            "encode_stage_ms": {k: round(1e3 * v, 4) for k, v in e.items()},
            "segment_stage_ms": {k: round(1e3 * v, 4) for k, v in s.items()},
            "encode_total_ms": round(1e3 * total, 4),
            "share_of_encode_stages": {
                "bits + entropy coding": round(coding / parts, 4),
                "C (network)": round(e["C"] / parts, 4),
                "preprocessing + container": round(1 - (coding + e["C"]) / parts, 4)}}


# Scaling with input size

def resized(case: Sample, n: int) -> np.ndarray:
    """A real input resized to n x n (RGB, bicubic) or n x n x n (trilinear)."""
    if case.kind == "2d":
        return np.asarray(Image.fromarray(case.array).resize((n, n), Image.BICUBIC))
    v = torch.from_numpy(case.array.astype(np.float32))[None, None]
    return F.interpolate(v, size=(n, n, n), mode="trilinear", align_corners=False)[0, 0].numpy()


SCALED_OPS = ("segcodec encode", "segcodec segment", *PEER_OPS)


def scaling(cases: list[Sample], sizes: dict, settings: dict, repeat: int) -> list[dict]:
    rows = []
    for kind, ns in sizes.items():
        base = next((c for c in cases if c.kind == kind), None)
        if base is None:
            continue
        for n in ns:
            array = resized(base, n)
            sample = Sample(base.name, base.task, array)
            files = coded(sample, settings[base.task])
            ops = operations(sample, settings[base.task], files)
            t = {name: samples(ops[name], repeat, SCALING_BUDGET_S) for name in SCALED_OPS}
            rows.append({"kind": kind, "from": base.name, "shape": list(array.shape),
                         "pixels": int(np.prod(array.shape[:2] if kind == "2d" else array.shape)),
                         "bytes": {k: len(v) for k, v in files.items()},
                         "runs": {k: len(v) for k, v in t.items()},
                         "median_ms": {k: round(1e3 * statistics.median(v), 3)
                                       for k, v in t.items()}})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [k for k in ("2d", "3d") if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        sel = [r for r in rows if r["kind"] == kind]
        for op in SCALED_OPS:
            style = "-" if op.startswith("segcodec") else "--"
            ax.loglog([r["pixels"] for r in sel], [r["median_ms"][op] / 1e3 for r in sel],
                      style, marker="o", label=op)
        ax.set_xlabel("pixels" if kind == "2d" else "voxels")
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{kind.upper()}: " + ", ".join("x".join(map(str, r["shape"])) for r in sel),
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Peak memory, each operation in a fresh subprocess

def _settle() -> None:
    """Give freed heap pages back to the OS, so that reusing them counts as new RSS again."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak(fn) -> dict:
    """Peak RSS over the baseline during fn() (VmHWM, reset through clear_refs; ru_maxrss delta
    where that is refused), then tracemalloc's peak in a second call: both after a warm-up."""
    import resource
    fn()
    _settle()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (and ru_maxrss) to now
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss delta"
    base_kb = status_kb("VmRSS")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    if method == "ru_maxrss delta":
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    else:
        rss_kb = status_kb("VmHWM") - base_kb
    _settle()
    tracemalloc.start()
    fn()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_peak_over_baseline_mb": round(rss_kb / 1024, 2),
            "baseline_rss_mb": round(base_kb / 1024, 1),
            "tracemalloc_peak_mb": round(traced / 2**20, 3), "rss_method": method}


def memory_child(job_path: str) -> None:
    """Subprocess side of ``memory``: measure every job of the JSON file, print JSON lines."""
    jobs = json.loads(Path(job_path).read_text())
    torch.set_num_threads(jobs["threads"])
    zoo.installed()
    for job in jobs["jobs"]:
        array = np.load(job["array"])
        sample = Sample(job["label"], job["task"], array)
        ops = operations(sample, job["settings"], coded(sample, job["settings"]))
        for name in jobs["ops"]:
            print(json.dumps({"input": job["label"], "shape": list(array.shape), "op": name,
                              **_peak(ops[name])}), flush=True)


def memory(inputs: list[tuple[str, str, np.ndarray, dict]], ops, threads: int) -> list[dict]:
    """(label, task, array, settings) -> peak memory rows, all in one fresh Python process."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i, (label, task, array, settings) in enumerate(inputs):
            np.save(f"{tmp}/{i}.npy", array)
            jobs.append({"label": label, "task": task, "array": f"{tmp}/{i}.npy",
                         "settings": settings})
        Path(tmp, "jobs.json").write_text(json.dumps({"threads": threads, "ops": list(ops),
                                                      "jobs": jobs}))
        out = subprocess.run([sys.executable, "-c", "import sys, bench.speed as s; "
                              "s.memory_child(sys.argv[1])", f"{tmp}/jobs.json"],
                             capture_output=True, text=True,
                             cwd=REPO, check=False)
    if out.returncode:
        raise RuntimeError(f"memory subprocess failed: {out.stderr[-800:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


# Entry point

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="../shared/data; without it, fixtures/")
    ap.add_argument("--smoke", action="store_true",
                    help="fixtures, 2 repeats, small scaling sizes: seconds, for the tests")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--cases", type=int, default=4, help="inputs per task with --data")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: x264 is pinned to one thread and "
                         "OpenJPEG runs on one); 0 keeps torch's default")
    ap.add_argument("--rate", type=Path, default=RESULTS / "rate.json")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = None if args.smoke else args.data
    repeat = 2 if args.smoke else args.repeat
    n = args.cases if data else 3  # every fixture: 3 ISIC images, 2 volumes
    cases = load_samples(data, {"isic": n, "hippocampus": n})
    settings = peer_settings(args.rate)
    per_case = []
    for case in cases:
        per_case.append(time_case(case, settings[case.task], repeat))
        print(json.dumps({k: per_case[-1][k] for k in ("name", "median_ms", "ratios")}),
              flush=True)
    summary = {task: {k: round(statistics.median(c["ratios"][k] for c in per_case
                                                 if c["task"] == task), 4) for k in RATIOS}
               for task in KIND if any(c["task"] == task for c in per_case)}
    firsts = [next(c for c in cases if c.kind == k) for k in ("2d", "3d")
              if any(c.kind == k for c in cases)]
    sizes = SMOKE_SIZES if args.smoke else SIZES
    scale_rows = scaling(cases, sizes, settings, repeat)
    mem_inputs = [(c.name, c.task, c.array, settings[c.task]) for c in firsts]
    if not args.smoke:  # the largest scaled inputs too: where memory starts to matter
        mem_inputs += [(f"{f.name} resized to {sizes[f.kind][-1]}", f.task,
                        resized(f, sizes[f.kind][-1]), settings[f.task]) for f in firsts]
    result = {
        "command": command("speed", argv),
        "machine": machine(args.threads or None),
        "models": model_names(),
        "repeat": repeat, "peer_settings": settings,
        "cases": per_case, "median_ratios": summary,
        "encode_stages": [stages(c, repeat) for c in firsts],
        "memory": memory(mem_inputs, RATIO_OPS, args.threads or torch.get_num_threads()),
        "scaling": scale_rows,
    }
    write_outputs(args.out, "speed", result, markdown(result))
    plot_scaling(scale_rows, args.out / "speed_scaling.png")


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _shape(row: dict) -> str:
    return "x".join(map(str, row["shape"]))


def _bytes_and_times(row: dict, ops) -> str:
    """The last cells of a per-input or scaling row: bytes of each codec, then op times."""
    b = row["bytes"]
    return (" / ".join(str(b[k]) for k in ("segcodec", *(p.name for p in peers()))) + " | "
            + " | ".join(_ms(row["median_ms"][k]) for k in ops) + " |")


BYTES_HEADER = "bytes " + " / ".join(["sgc", *(p.short for p in peers())])


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Speed against {and_join(p.title for p in peers())} (`{r['command']}`)", "",
             f"{m['cpus']} CPUs ({m['platform']}), torch {m['torch']} on {m['torch_threads']} "
             f"thread(s); {and_join(p.implementation for p in peers())}, one thread each, at the "
             f"settings of bench/codecs.py (x264 preset placebo: its slowest). Models: "
             f"{', '.join(r['models'])}. Medians of {r['repeat']} runs after a warm-up, in "
             "rounds that run every operation of an input once (`common.interleaved`), so a "
             "burst of load from elsewhere slows them alike; ratios are segcodec time / peer "
             "time (below 1: segcodec is faster).", "",
             "Peer settings: " + "; ".join(
                 f"{task} {peer} {param}={s[param]}" + (
                     f" (Dice {s['dice']:.3f}, segcodec {s['segcodec_dice']:.3f}; "
                     f"{s['source']})"
                     if s["matched"] else " (fixed fallback: Dice not matched)")
                 for task, t in r["peer_settings"].items() for peer, s in t.items()
                 for param in [by_name(peer).param]) + ".", "",
             "## Median ratios per task", "",
             "| task | " + " | ".join(RATIOS) + " |", "|---|" + "---|" * len(RATIOS)]
    for task, v in r["median_ratios"].items():
        lines.append(f"| {task} | " + " | ".join(f"{v[k]:.3g}" for k in RATIOS) + " |")
    lines += ["", "## Per input (ms, median)", "",
              f"| input | shape | {BYTES_HEADER} | " + " | ".join(RATIO_OPS) + " |",
              "|---|---|---|" + "---|" * len(RATIO_OPS)]
    lines += [f"| {c['name']} | {_shape(c)} | {_bytes_and_times(c, RATIO_OPS)}"
              for c in r["cases"]]
    lines += ["", "## Where segcodec's time goes (ms, median; stages timed separately)", ""]
    for s in r["encode_stages"]:
        share = s["share_of_encode_stages"]
        lines += [f"**{s['case']}** ({_shape(s)}): encode "
                  f"{s['encode_total_ms']:.3g} ms; of the stages, bits + entropy coding "
                  f"{100 * share['bits + entropy coding']:.0f}%, C "
                  f"{100 * share['C (network)']:.0f}%, preprocessing + container "
                  f"{100 * share['preprocessing + container']:.0f}%.", "",
                  "| encode stage | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.3g} |" for k, v in s["encode_stage_ms"].items()]
        lines += ["", "| segment stage | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.3g} |" for k, v in s["segment_stage_ms"].items()]
        lines.append("")
    lines += ["## Peak memory", "",
              "One fresh Python process; for each operation a warm-up call, then freed heap "
              "handed back to the OS (malloc_trim), the peak reset, and one call measured. "
              "RSS: peak resident memory over the baseline (everything: torch, codecs, numpy); "
              "tracemalloc: Python objects and numpy buffers only (not torch tensors or the "
              "C libraries' own buffers), in a separate call.", "",
              "| input | shape | operation | RSS peak over baseline (MB) | tracemalloc peak (MB) "
              "| baseline RSS (MB) |", "|---|---|---|---|---|---|"]
    for x in r["memory"]:
        lines.append(f"| {x['input']} | {_shape(x)} | {x['op']} | "
                     f"{x['rss_peak_over_baseline_mb']} | {x['tracemalloc_peak_mb']} | "
                     f"{x['baseline_rss_mb']} |")
    method = {x["rss_method"] for x in r["memory"]}
    lines += ["", f"RSS method: {', '.join(sorted(method))}.", "",
              "## Time against input size (ms, median)", "",
              "Real inputs resized (2D bicubic RGB, 3D trilinear); segcodec resamples every "
              "input to its working grid, so its network cost is flat and only the resampling "
              f"grows. Runs per point: up to {r['repeat']}, fewer where they would pass "
              f"{SCALING_BUDGET_S:.0f} s. Plot: speed_scaling.png.", "",
              f"| shape | pixels | {BYTES_HEADER} | " + " | ".join(SCALED_OPS) + " |",
              "|---|---|---|" + "---|" * len(SCALED_OPS)]
    lines += [f"| {_shape(x)} | {x['pixels']} | {_bytes_and_times(x, SCALED_OPS)}"
              for x in r["scaling"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

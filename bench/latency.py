"""End-to-end latency through the real server, step by step, next to the paper's Table 2.

    python -m bench latency [--repeat 10] [--smoke] [--rate bench/results/rate.json]
                            [--references bench/references] [--out bench/results]

For each fixture (ISIC photographs, hippocampus volumes): compression on the client
(``segcodec.encode``), the request through ``segcodec serve`` on 127.0.0.1 (the server's own
Server-Timing steps: entropy decoding, g and s, label coding), and label decoding on the
client; medians over ``--repeat`` runs.  Loopback has no bandwidth to speak of, so the
transmission is also modelled from the bytes on the wire (HTTP framing included) at uplinks of
10 and 100 Mbit/s and at the paper's 300 MB / 13 s.

JPEG-2000 and H.264 rows for the same files: encode on the client, decode, segmentation by
the shipped reference segmentor (``bench/references``, trained on uncompressed images; with
``--smoke`` an untrained one, flagged) and label coding on the server, each timed in this
process (no server runs them), sent with the same HTTP framing as the file's segcodec
request. Their setting is the one whose Dice in rate.json is closest to segcodec's (matched
Dice), else a fixed one, flagged. Dice of every row is measured on the files themselves.
``--smoke``: one file per kind, 2 repeats. Writes latency.json and latency.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

import segcodec
from segcodec import labelcodec
from segcodec.io import read as read_image
from segcodec.remote import Client
from segcodec.train import data as training_data

from . import references
from .codecs import Codec, by_name, peer_settings, peers
from .common import (NDIM, RESULTS, LocalServer, Sample, Segmentor, and_join, command,
                     fixture_pairs, machine, mean_dice, median_seconds, model_names,
                     n_classes, to_chw, untrained_segmentor, write_outputs)

LINKS = {"10 Mbit/s": 10e6, "100 Mbit/s": 100e6, "300 MB / 13 s (paper)": 300e6 * 8 / 13}
PAPER = [  # Table 2 of Liu et al. (MICCAI 2020), as quoted in issue 5
    {"method": "paper: JPEG", "data": "30 MB", "transmission_s": 1.4, "compression_s": 0.0013,
     "reconstruction_s": 0.0013, "segmentation_s": 0.1, "total_s": 1.5026},
    {"method": "paper: theirs", "data": "3.3 MB", "transmission_s": 0.16,
     "compression_s": 0.003, "reconstruction_s": 0.0003, "segmentation_s": 0.1,
     "total_s": 0.2633},
]
KINDS = {"isic": "2D ISIC 256x256 RGB", "hippocampus": "3D hippocampus MRI"}


def wire_bytes(url: str, data: bytes) -> tuple[int, int]:
    """Bytes of one HTTP/1.1 request and its answer, start lines and headers included."""
    with httpx.Client(base_url=url, headers={"User-Agent": "segcodec"}) as http:
        request = http.build_request("POST", "/v1/segment", content=data,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Accept": labelcodec.MEDIA_TYPE})
        response = http.send(request)
    head = lambda line, headers: len(line) + 2 + sum(len(k) + len(v) + 4 for k, v in headers) + 2
    up = head(f"POST {request.url.raw_path.decode()} HTTP/1.1", request.headers.raw) + len(data)
    down = head(f"HTTP/1.1 {response.status_code} {response.reason_phrase}",
                response.headers.raw) + len(response.content)
    return up, down


def measure(url: str, path: Path, truth, task: str, repeat: int) -> dict:
    loaded = read_image(path)
    encode = lambda: segcodec.encode(loaded.array, kind=loaded.kind, affine=loaded.affine,
                                     source=loaded.source)
    data = encode()
    steps: dict[str, list[float]] = {k: [] for k in (
        "compression", "request", "reconstruction", "segmentation", "label_coding",
        "label_decoding")}
    with Client(url) as client:
        client.fetch(data)  # warm the connection and the caches
        for _ in range(repeat):
            t0 = time.perf_counter()
            data = encode()
            steps["compression"].append(time.perf_counter() - t0)
            got = client.fetch(data)
            steps["request"].append(got.seconds)
            steps["reconstruction"].append(got.server_ms["decode"] / 1e3)
            steps["segmentation"].append(got.server_ms["segment"] / 1e3)
            steps["label_coding"].append(got.server_ms["encode"] / 1e3)
            steps["label_decoding"].append(got.decode_seconds)
    up, down = wire_bytes(url, data)
    median = {k: statistics.median(v) for k, v in steps.items()}
    server = median["reconstruction"] + median["segmentation"] + median["label_coding"]
    return {"method": "segcodec", "task": task, "file": path.name,
            "shape": list(segcodec.read_header(data).shape),
            "dice": round(mean_dice(segcodec.segment(data, device="cpu"), truth, task), 4),
            "input_file_bytes": path.stat().st_size, "sgc_bytes": len(data),
            "payload_bytes": len(data),
            "labels_bytes": got.received, "wire_up_bytes": up, "wire_down_bytes": down,
            "median_s": {k: round(v, 6) for k, v in median.items()},
            "loopback_http_overhead_s": round(median["request"] - server, 6),
            "loopback_total_s": round(median["compression"] + median["request"]
                                      + median["label_decoding"], 6)}


def measure_peer(peer: Codec, setting: dict, path: Path, truth, task: str, seg: Segmentor,
                 ours: dict, repeat: int) -> dict:
    """Client encode, server decode + reference segmentation + label coding, client label
    decoding: each timed here (median after a warm-up), as ``measure`` times segcodec's."""
    loaded = read_image(path)
    sample = Sample(path.name, task, loaded.array, truth, loaded.affine)
    param, value = peer.param, setting[peer.param]
    data = peer.encode(sample, value)
    image = peer.decode(data, sample)
    x = to_chw(image, NDIM[task])
    labels = seg(x, truth.shape)
    code = lambda: labelcodec.encode(labels, n_classes(task), affine=loaded.affine,
                                     source=loaded.source)
    stream = code()
    steps = {"compression": lambda: peer.encode(sample, value),
             "reconstruction": lambda: peer.decode(data, sample),
             "segmentation": lambda: seg(x, truth.shape), "label_coding": code,
             "label_decoding": lambda: labelcodec.decode(stream)}
    median = {k: median_seconds(f, repeat) for k, f in steps.items()}
    return {"method": peer.name, "task": task, "file": path.name,
            "shape": list(sample.array.shape),
            "setting": {param: value, "matched_dice": setting["matched"]},
            "dice": round(mean_dice(labels, truth, task), 4),
            "input_file_bytes": path.stat().st_size, "payload_bytes": len(data),
            "labels_bytes": len(stream),
            # the same HTTP framing as this file's segcodec request and answer
            "wire_up_bytes": len(data) + ours["wire_up_bytes"] - ours["sgc_bytes"],
            "wire_down_bytes": len(stream) + ours["wire_down_bytes"] - ours["labels_bytes"],
            "median_s": {k: round(v, 6) for k, v in median.items()}}


def method_name(group: list[dict]) -> str:
    r = group[0]
    if r["method"] == "segcodec":
        return "segcodec"
    (param, value), = ((k, v) for k, v in r["setting"].items() if k != "matched_dice")
    return (f"{by_name(r['method']).title} {param} {value} + seg"
            + ("" if r["setting"]["matched_dice"] else " (fixed setting, Dice NOT matched)"))


def rows(results: list[dict]) -> list[dict]:
    """Table 2's columns for each kind of file, method and link: means over the files."""
    out = [dict(p) for p in PAPER]
    for task, kind in KINDS.items():
        for method in ("segcodec", *(p.name for p in peers())):
            group = [r for r in results if r["task"] == task and r["method"] == method]
            if not group:
                continue
            mean = lambda f: statistics.fmean(f(r) for r in group)
            step = {k: mean(lambda r: r["median_s"][k]) for k in group[0]["median_s"]}
            for link, bps in LINKS.items():
                up = mean(lambda r: r["wire_up_bytes"]) * 8 / bps
                down = mean(lambda r: r["wire_down_bytes"]) * 8 / bps
                total = (step["compression"] + up + step["reconstruction"]
                         + step["segmentation"] + step["label_coding"] + down
                         + step["label_decoding"])
                out.append({
                    "method": f"{method_name(group)}, {kind}, {link}",
                    "data": f"{mean(lambda r: r['payload_bytes']):.0f} B "
                            f"({mean(lambda r: r['wire_up_bytes']):.0f} B with HTTP)",
                    "dice": round(mean(lambda r: r["dice"]), 4),
                    "transmission_s": round(up, 6),
                    "compression_s": round(step["compression"], 6),
                    "reconstruction_s": round(step["reconstruction"], 6),
                    "segmentation_s": round(step["segmentation"], 6),
                    "labels_back_s": round(step["label_coding"] + down
                                           + step["label_decoding"], 6),
                    "total_s": round(total, 6),
                    "send_the_image_s": round(mean(lambda r: r["input_file_bytes"]) * 8 / bps,
                                              6)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="one file per kind, 2 repeats")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int,
                    help="torch threads here and in the server (default: torch's)")
    ap.add_argument("--rate", type=Path, default=RESULTS / "rate.json",
                    help="rate.json, to pick the baselines' setting at matched Dice")
    ap.add_argument("--references", type=Path, default=references.FOLDER,
                    help="where the reference segmentors <task>-seg.safetensors live")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by the server at start
    repeat = 2 if args.smoke else args.repeat
    pairs = {task: fixture_pairs(task)[:1 if args.smoke else None] for task in KINDS}
    settings = peer_settings(args.rate)
    if args.smoke:
        segmentors = {task: (untrained_segmentor(task, "untrained"),
                             f"UNTRAINED {task}-seg (--smoke): its Dice means nothing")
                      for task in KINDS}
    else:
        try:
            segmentors = {task: (references.load(task, args.references),
                                 str(references.path_for(task, args.references)))
                          for task in KINDS}
        except FileNotFoundError as exc:
            sys.exit(f"bench latency: error: {exc}")
    truths = {path: training_data.read_pair(path, label_path)[1]
              for files in pairs.values() for path, label_path in files}
    results = []
    with LocalServer("--device", args.device) as server:
        for task, files in pairs.items():
            for path, _ in files:
                results.append(measure(server.url, path, truths[path], task, repeat))
    for task, files in pairs.items():
        for path, _ in files:
            ours = next(r for r in results if r["file"] == path.name)
            results += [measure_peer(peer, settings[task][peer.name], path, truths[path], task,
                                     segmentors[task][0], ours, repeat) for peer in peers()]
    result = {
        "command": command("latency", argv),
        "machine": {**machine(), "device": args.device},
        "models": model_names(),
        "reference_segmentors": {task: s[1] for task, s in segmentors.items()},
        "peer_settings": settings,
        "links_bit_per_s": LINKS, "files": results, "table": rows(results)}
    write_outputs(args.out, "latency", result, markdown(result))


def markdown(r: dict) -> str:
    s = lambda v: "" if v is None else f"{v:.4f}" if v >= 1e-3 else f"{v:.2g}"
    m = r["machine"]
    lines = [f"# Latency, end to end through `segcodec serve` (`{r['command']}`)", "",
             f"Client and server on one machine ({m['cpus']} CPUs, {m['device']}, torch "
             f"{m['torch']} on {m['torch_threads']} threads; models {', '.join(r['models'])}), "
             "over 127.0.0.1; transmission modelled from the bytes on the wire at each link "
             "rate; every other step measured (medians). Reconstruction = entropy decoding of "
             "the latents on the server (segcodec) or the codec's decoder ("
             + ", ".join(p.title for p in peers()) + "); "
             "segmentation = g and s (segcodec) or the reference segmentor on the decoded "
             "image; labels back = label coding + download + decoding (the paper does not "
             "count it). Paper rows as quoted in issue 5. Dice: mean over the foreground "
             "classes and over the files below.", "",
             and_join(p.title for p in peers())
             + " steps are timed in-process (no server runs them) and sent "
             "with the same HTTP framing as the file's segcodec request. Reference segmentor: "
             + "; ".join(f"{t}: {v}" for t, v in r["reference_segmentors"].items()) + ".", "",
             "Baseline settings: " + "; ".join(
                 f"{t} {p}: " + (f"Dice-matched from {v['source']} (rate.json Dice "
                                 f"{v['dice']:.3f} vs segcodec {v['segcodec_dice']:.3f})"
                                 if v["matched"] else f"NOT matched, {v['source']}")
                 for t, by_peer in r["peer_settings"].items() for p, v in by_peer.items()) + ".",
             "",
             "| method | data per image | Dice | transmission (s) | compression (s) "
             "| reconstruction (s) | segmentation (s) | labels back (s) | total (s) "
             "| sending the input file (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["table"]:
        dice = "" if x.get("dice") is None else f"{x['dice']:.3f}"
        lines.append(f"| {x['method']} | {x['data']} | {dice} | {s(x['transmission_s'])} | "
                     f"{s(x['compression_s'])} | {s(x['reconstruction_s'])} | "
                     f"{s(x['segmentation_s'])} | {s(x.get('labels_back_s'))} | "
                     f"{s(x['total_s'])} | {s(x.get('send_the_image_s'))} |")
    lines += ["", "| file | shape | input file (B) | .sgc (B) | labels (B) | on the wire up/down "
              "(B) | Dice | measured loopback total (s) | HTTP + queueing on loopback (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for f in r["files"]:
        if f["method"] == "segcodec":
            lines.append(f"| {f['file']} | {'x'.join(map(str, f['shape']))} | "
                         f"{f['input_file_bytes']} | {f['sgc_bytes']} | {f['labels_bytes']} | "
                         f"{f['wire_up_bytes']}/{f['wire_down_bytes']} | {f['dice']:.3f} | "
                         f"{f['loopback_total_s']:.4f} | {f['loopback_http_overhead_s']:.4f} |")
    lines += ["", "| file | codec | setting | bytes | labels (B) | Dice | compression (s) | "
              "reconstruction (s) | segmentation (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for f in r["files"]:
        if f["method"] != "segcodec":
            t = f["median_s"]
            lines.append(f"| {f['file']} | {by_name(f['method']).title} | "
                         + " ".join(f"{k} {v}" for k, v in f["setting"].items()
                                    if k != "matched_dice")
                         + ("" if f["setting"]["matched_dice"] else " (fixed, not matched)")
                         + f" | {f['payload_bytes']} | {f['labels_bytes']} | {f['dice']:.3f} | "
                         f"{s(t['compression'])} | {s(t['reconstruction'])} | "
                         f"{s(t['segmentation'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

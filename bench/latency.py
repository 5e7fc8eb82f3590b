"""End-to-end latency through the real server, step by step, next to the paper's Table 2.

    python -m bench.latency [--repeat 10] [--out bench/results]

For each fixture (ISIC photographs, hippocampus volumes): compression on the client
(``segcodec.encode``), the request through ``segcodec serve`` on 127.0.0.1 (the server's own
Server-Timing steps: entropy decoding, g and s, label coding), and label decoding on the
client; medians over ``--repeat`` runs.  Loopback has no bandwidth to speak of, so the
transmission is also modelled from the bytes on the wire (HTTP framing included) at uplinks of
10 and 100 Mbit/s and at the paper's 300 MB / 13 s.  Writes latency.json and latency.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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

from .load import FIXTURES, RESULTS, LocalServer

LINKS = {"10 Mbit/s": 10e6, "100 Mbit/s": 100e6, "300 MB / 13 s (paper)": 300e6 * 8 / 13}
PAPER = [  # Table 2 of Liu et al. (MICCAI 2020), as quoted in issue 5
    {"method": "paper: JPEG", "data": "30 MB", "transmission_s": 1.4, "compression_s": 0.0013,
     "reconstruction_s": 0.0013, "segmentation_s": 0.1, "total_s": 1.5026},
    {"method": "paper: theirs", "data": "3.3 MB", "transmission_s": 0.16,
     "compression_s": 0.003, "reconstruction_s": 0.0003, "segmentation_s": 0.1,
     "total_s": 0.2633},
]


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


def measure(url: str, path: Path, repeat: int) -> dict:
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
    return {"file": path.name, "shape": list(segcodec.read_header(data).shape),
            "input_file_bytes": path.stat().st_size, "sgc_bytes": len(data),
            "labels_bytes": got.received, "wire_up_bytes": up, "wire_down_bytes": down,
            "median_s": {k: round(v, 6) for k, v in median.items()},
            "loopback_http_overhead_s": round(median["request"] - server, 6),
            "loopback_total_s": round(median["compression"] + median["request"]
                                      + median["label_decoding"], 6)}


def rows(results: list[dict]) -> list[dict]:
    """Table 2's columns for each kind of fixture and link: means over the files of a kind."""
    out = [dict(p) for p in PAPER]
    for kind, prefix in (("2D ISIC 256x256 RGB", "ISIC"), ("3D hippocampus MRI", "hippo")):
        group = [r for r in results if r["file"].startswith(prefix)]
        mean = lambda f: statistics.fmean(f(r) for r in group)
        for link, bps in LINKS.items():
            up = mean(lambda r: r["wire_up_bytes"]) * 8 / bps
            down = mean(lambda r: r["wire_down_bytes"]) * 8 / bps
            step = {k: mean(lambda r: r["median_s"][k]) for k in group[0]["median_s"]}
            total = (step["compression"] + up + step["reconstruction"] + step["segmentation"]
                     + step["label_coding"] + down + step["label_decoding"])
            out.append({
                "method": f"segcodec {kind}, {link}",
                "data": f"{mean(lambda r: r['sgc_bytes']):.0f} B "
                        f"({mean(lambda r: r['wire_up_bytes']):.0f} B with HTTP)",
                "transmission_s": round(up, 6), "compression_s": round(step["compression"], 6),
                "reconstruction_s": round(step["reconstruction"], 6),
                "segmentation_s": round(step["segmentation"], 6),
                "labels_back_s": round(step["label_coding"] + down + step["label_decoding"], 6),
                "total_s": round(total, 6),
                "send_the_image_s": round(mean(lambda r: r["input_file_bytes"]) * 8 / bps, 6)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    paths = sorted((FIXTURES / "isic").glob("ISIC_*[0-9].jpg"))
    paths += sorted(p for p in (FIXTURES / "hippocampus").glob("*.nii.gz")
                    if "labels" not in p.name)
    with LocalServer("--device", args.device) as server:
        results = [measure(server.url, p, args.repeat) for p in paths]
    result = {
        "command": " ".join(["python -m bench.latency",
                             *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": args.device},
        "models": [f"{m['name']} {m['id']}" for m in segcodec.list_models()],
        "links_bit_per_s": LINKS, "files": results, "table": rows(results)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "latency.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    s = lambda v: "" if v is None else f"{v:.4f}" if v >= 1e-3 else f"{v:.2g}"
    lines = [f"# Latency, end to end through `segcodec serve` (`{r['command']}`)", "",
             f"Client and server on one machine ({r['machine']['cpus']} CPUs, "
             f"{r['machine']['device']}; models {', '.join(r['models'])}), over 127.0.0.1; "
             "transmission modelled from the "
             "bytes on the wire at each link rate; every other step measured (medians). "
             "Reconstruction = entropy decoding of the latents on the server; segmentation = "
             "g and s; labels back = label coding + download + decoding (the paper does not "
             "count it). Paper rows as quoted in issue 5.", "",
             "| method | data per image | transmission (s) | compression (s) | reconstruction (s) "
             "| segmentation (s) | labels back (s) | total (s) | sending the input file (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["table"]:
        lines.append(f"| {x['method']} | {x['data']} | {s(x['transmission_s'])} | "
                     f"{s(x['compression_s'])} | {s(x['reconstruction_s'])} | "
                     f"{s(x['segmentation_s'])} | {s(x.get('labels_back_s'))} | "
                     f"{s(x['total_s'])} | {s(x.get('send_the_image_s'))} |")
    lines += ["", "| file | shape | input file (B) | .sgc (B) | labels (B) | on the wire up/down "
              "(B) | measured loopback total (s) | HTTP + queueing on loopback (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for f in r["files"]:
        lines.append(f"| {f['file']} | {'x'.join(map(str, f['shape']))} | "
                     f"{f['input_file_bytes']} | {f['sgc_bytes']} | {f['labels_bytes']} | "
                     f"{f['wire_up_bytes']}/{f['wire_down_bytes']} | {f['loopback_total_s']:.4f} "
                     f"| {f['loopback_http_overhead_s']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

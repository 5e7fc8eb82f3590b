"""The audit's attack files against `segment` and the service: time and memory of each, against
a normal file's.

    python -m bench attacks [--out bench/results]

Each case runs in a fresh Python process (so its peak memory, VmHWM, is its own) that first
loads the models, then reads VmHWM and the clock, runs the case, and reads them again.
Reported: the outcome (refused with its one-line error, or done), the seconds and the memory
the case added, and the ratio to the same step on a normal file of the same model.  The
service cases post to a `segcodec serve` on loopback and read its memory from /proc.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import zstandard

import segcodec
from segcodec import container, labelcodec, wire

from .common import FIXTURES, RESULTS, LocalServer, command, machine, status_kb, write_outputs

_CHILD = r"""
import json, sys, time
from pathlib import Path
import segcodec
from segcodec import labelcodec, zoo
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
kind, path = sys.argv[1], Path(sys.argv[2])
from segcodec import backend
backend.set_threads(1)  # as the command line runs it (--threads 1)
zoo.installed()
segcodec.segment(segcodec.encode(sys.argv[3]), device="cpu")  # warm: kernels, models
before, t0 = hwm(), time.perf_counter()
try:
    if kind == "sgc":
        segcodec.segment(path.read_bytes(), device="cpu")
    elif kind == "labels":
        labelcodec.decode(path.read_bytes())
    elif kind == "model":
        zoo.load_file(path)
    else:
        segcodec.encode(path)
    outcome = "done"
except segcodec.SgcError as exc:
    outcome = "refused: " + str(exc)
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - t0,
                  "added_mb": (hwm() - before) / 1024}))
"""


def _child(kind: str, path: Path, warm: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path), str(warm)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reshaped(data: bytes, shape) -> bytes:
    header, payload = container.read(data)
    return container.write(dataclasses.replace(header, shape=tuple(shape)), payload)


def _files(tmp: Path) -> tuple[list[tuple[str, str, Path, str]], dict]:
    """(case, kind, file, which normal case it is measured against), and the normal files."""
    isic = FIXTURES / "isic" / "ISIC_0001769.jpg"
    hippo = FIXTURES / "hippocampus" / "hippocampus_019.nii.gz"
    normal = {"2D": segcodec.encode(isic), "3D": segcodec.encode(hippo)}
    for name, data in normal.items():
        (tmp / f"normal-{name}.sgc").write_bytes(data)
    cases = []

    def add(case, kind, name, data, against):
        (tmp / name).write_bytes(data)
        cases.append((case, kind, tmp / name, against))

    add("a 3D .sgc declaring 406³", "sgc", "big3d.sgc", _reshaped(normal["3D"], (406,) * 3), "3D")
    add("a 2D .sgc declaring 59880x256", "sgc", "tall.sgc",
        _reshaped(normal["2D"], (59880, 256)), "2D")
    add("a 2D .sgc declaring 256x56302", "sgc", "wide.sgc",
        _reshaped(normal["2D"], (256, 56302)), "2D")
    # The most the default photo model takes: 4:1 at the format's 2^26 pixels, the cost of an
    # honest 67-megapixel photograph.
    add("a 2D .sgc declaring 16384x4096", "sgc", "strip.sgc",
        _reshaped(normal["2D"], (16384, 4096)), "2D")
    # isic-lesion-v3 predates the domain: its bound comes from the built-in index.
    v3 = segcodec.encode(isic, model="isic-lesion-v3")
    add("a 2D .sgc declaring 59880x256 (isic-lesion-v3)", "sgc", "tall-v3.sgc",
        _reshaped(v3, (59880, 256)), "2D")
    header, payload = container.read(normal["2D"])
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(
        b"[" * 100_000 + b"]" * 100_000)
    raw = b"SG" + bytes([container.VERSION, normal["2D"][3] | 2]) + header.model_id + \
        bytes([header.ndim | header.channels << 2]) + \
        b"".join(wire.varint(s) for s in (*header.shape, *header.latent_shape))
    add("metadata nested 100,000 deep", "sgc", "nested.sgc",
        wire.with_crc(raw + wire.varint(len(frame)) + frame + payload), "2D")
    stream = labelcodec.encode(np.zeros((2, 2, 2), np.uint8), 2)
    parsed = bytearray(stream[:-4])
    add("a 17-byte label stream declaring 406³", "labels", "big.sl",
        wire.with_crc(bytes(parsed[:5]) + b"".join(wire.varint(406) for _ in range(3))
                      + bytes(parsed[8:])), "3D")
    add("a 17-byte label stream declaring 256³", "labels", "short.sl",
        wire.with_crc(bytes(parsed[:5]) + b"".join(wire.varint(256) for _ in range(3))
                      + bytes(parsed[8:])), "3D")
    from PIL import Image
    Image.new("L", (40000, 1600)).save(tmp / "strip.png")  # 4 KB on disk, 64 MB of pixels
    cases.append(("a PNG of 40000x1600", "image", tmp / "strip.png", "2D"))
    import nibabel as nib
    nifti = nib.Nifti1Header()
    nifti.set_data_shape((1024, 1024, 256))
    nifti.set_data_dtype(np.float32)
    nifti["vox_offset"] = 352
    with gzip.open(tmp / "bomb.nii.gz", "wb") as f:
        f.write(nifti.binaryblock + b"\0" * 4 + b"\0" * (1 << 20))
    cases.append(("a .nii.gz declaring 1024x1024x256 (1 MiB of zeros inside)", "image",
                  tmp / "bomb.nii.gz", "3D"))
    return cases, normal


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench attacks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="the same cases (they are few)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    warm = FIXTURES / "isic" / "ISIC_0001769.jpg"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases, normal = _files(tmp)
        base = {name: _child("sgc", tmp / f"normal-{name}.sgc", warm) for name in normal}
        for case, kind, path, against in cases:
            r = _child(kind, path, warm)
            rows.append({"case": case, "where": "segment", "bytes": path.stat().st_size,
                         "outcome": r["outcome"], "seconds": round(r["seconds"], 4),
                         "added_mb": round(r["added_mb"], 1),
                         "x_normal_time": round(r["seconds"] / base[against]["seconds"], 2)})
            if kind == "sgc" and r["outcome"] == "done":  # work per declared pixel, not per byte
                shape = segcodec.read_header(path.read_bytes()).shape
                normal_shape = segcodec.read_header(normal[against]).shape
                rows[-1]["x_normal_time_per_pixel"] = round(
                    rows[-1]["x_normal_time"] * math.prod(normal_shape) / math.prod(shape), 3)
        with LocalServer("--device", "cpu") as server, httpx.Client(timeout=120) as client:
            pid = server.proc.pid
            for case, kind, path, against in [c for c in cases if c[1] == "sgc"] + \
                    [(f"a normal {n} file", "sgc", tmp / f"normal-{n}.sgc", n) for n in normal]:
                rss0, t0 = status_kb("VmRSS", pid), time.perf_counter()
                answer = client.post(server.url + "/v1/segment", content=path.read_bytes())
                rows.append({"case": case, "where": "service", "bytes": path.stat().st_size,
                             "outcome": f"{answer.status_code}",
                             "seconds": round(time.perf_counter() - t0, 4),
                             "added_mb": round((status_kb("VmRSS", pid) - rss0) / 1024, 1)})
    normal_rows = {n: round(base[n]["seconds"], 4) for n in base}
    result = {"command": command("attacks", argv), "machine": machine(),
              "normal_segment_seconds": normal_rows, "rows": rows}
    lines = ["# Attack files (`python -m bench attacks`)", "", f"`{result['command']}`", "",
             f"A normal file's `segment` step: 2D {normal_rows['2D']:.4f} s, 3D "
             f"{normal_rows['3D']:.4f} s. Service memory is the server's RSS change.", "",
             "| case | where | bytes | outcome | seconds | memory added (MB) | x normal | "
             "x normal per declared pixel |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        outcome = r["outcome"] if len(r["outcome"]) < 90 else r["outcome"][:87] + "..."
        lines.append(f"| {r['case']} | {r['where']} | {r['bytes']} | {outcome} | "
                     f"{r['seconds']:.3f} | {r['added_mb']} | {r.get('x_normal_time', '')} | "
                     f"{r.get('x_normal_time_per_pixel', '')} |")
    write_outputs(args.out, "attacks", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

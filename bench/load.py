"""Load on the real server over loopback: throughput, latency percentiles, errors, memory.

    python -m bench.load [--requests 60] [--max-seconds 60] [--out bench/results]

Starts ``segcodec serve`` on a free 127.0.0.1 port, uploads the fixtures' .sgc files
(fixtures/isic/*.jpg, fixtures/hippocampus/*.nii.gz) round-robin at concurrency 1, 4 and 16,
``--requests`` per level or ``--max-seconds``, whichever ends first, then a burst of malformed
uploads.  Every answer is checked: 200, and labels equal to local ``segcodec.segment`` ones.
Server memory (RSS) is read before the load, after it and after the malformed burst.
``--slow-clients N`` holds N uploads open beside the load, each sending its headers and one
byte of a 1,000-byte body, then nothing (reopened whenever the server drops one); and
``--idle-headers N`` holds N connections that stop in the middle of their headers: neither
may cost the load any errors.
Writes load.json and load.md.  Not a test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np

import segcodec
from segcodec import labelcodec
from segcodec.io import read as read_image

from .common import (NDIM, RESULTS, LocalServer, command, fixture_pairs, machine, model_names,
                     status_kb, write_outputs)


def fixture_files() -> list[tuple[str, bytes]]:
    """(name, .sgc bytes) of every fixture image, encoded as `segcodec encode` would."""
    paths = [image for task in NDIM for image, _ in fixture_pairs(task)]
    out = []
    for p in paths:
        loaded = read_image(p)
        out.append((p.name, segcodec.encode(loaded.array, kind=loaded.kind,
                                            affine=loaded.affine, source=loaded.source)))
    return out


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    return status_kb("VmRSS", pid) * 1024


async def run_level(url: str, files, expected, concurrency: int, requests: int,
                    max_seconds: float) -> dict:
    latencies, errors, mismatches, sent = [], [], 0, 0
    counter = iter(range(requests))
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker():
            nonlocal mismatches, sent
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                sent += 1
                name, data = files[i % len(files)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/segment", content=data,
                                          headers={"Accept": labelcodec.MEDIA_TYPE})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:100]}")
                elif r.content != expected[name]:
                    mismatches += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = sorted(1e3 * x for x in latencies)
    return {"concurrency": concurrency, "requests": sent,
            "seconds": round(wall, 3), "throughput_rps": round(len(ms) / wall, 2),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms else None,
            "max_ms": round(ms[-1], 1) if ms else None,
            "errors": len(errors), "error_samples": errors[:3], "label_mismatches": mismatches}


STALLED_BODY = (b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nS")
STALLED_HEADERS = b"POST /v1/segment HTTP/1.1\r\nHost: a\r\nX-"  # the audit's idle socket


class SlowClients:
    """``n`` connections that send ``opening`` and stall, held open (and reopened) in a
    thread."""

    def __init__(self, port: int, n: int, opening: bytes = STALLED_BODY):
        self.port, self.n, self.answers, self.stop = port, n, {}, threading.Event()
        self.opening = opening
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _open(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(self.opening)
        s.setblocking(False)
        return s

    def _hold(self) -> None:
        socks = [self._open() for _ in range(self.n)]
        while not self.stop.wait(0.25):
            for i, s in enumerate(socks):
                try:
                    answer = s.recv(64)
                except BlockingIOError:
                    continue
                except OSError:
                    answer = b"reset"
                status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") \
                    else "closed"
                self.answers[status] = self.answers.get(status, 0) + 1
                s.close()
                socks[i] = self._open()
        for s in socks:
            s.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


async def malformed_burst(url: str, files, n: int) -> dict:
    rng = np.random.default_rng(0)
    codes: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for i in range(n):
            data = bytearray(files[i % len(files)][1])
            kind = i % 3
            if kind == 0:
                data = bytearray(rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8))
            elif kind == 1:
                data = data[:int(rng.integers(0, len(data)))]
            else:
                data[int(rng.integers(0, len(data)))] ^= 0xFF
            r = await client.post("/v1/segment", content=bytes(data))
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    return {"uploads": n, "status_codes": {str(k): v for k, v in sorted(codes.items())}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=60, help="Requests per concurrency level.")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="Time limit per level.")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--malformed", type=int, default=150)
    ap.add_argument("--slow-clients", type=int, default=0,
                    help="Stalled uploads held open beside the load.")
    ap.add_argument("--idle-headers", type=int, default=0,
                    help="Connections stalled within their headers, held open beside the load.")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    files = fixture_files()
    # Expected answers: local labels coded as the server codes them, compared byte for byte.
    expected = {}
    for name, data in files:
        d = segcodec.decode(data)
        expected[name] = labelcodec.encode(segcodec.segment(data, device=args.device),
                                           len(d.model.labels), affine=d.header.affine,
                                           source=d.header.source)
    with LocalServer("--device", args.device, "--max-queue", "64") as server:
        levels = []
        asyncio.run(run_level(server.url, files, expected, 1, len(files), 60))  # warm up
        rss_before = rss(server.proc.pid)
        with SlowClients(server.port, args.slow_clients) as slow, \
                SlowClients(server.port, args.idle_headers, STALLED_HEADERS) as idle:
            for c in args.concurrency:
                levels.append(asyncio.run(run_level(server.url, files, expected, c,
                                                    args.requests, args.max_seconds)))
                levels[-1]["server_rss_mb_after"] = round(rss(server.proc.pid) / 2**20, 1)
                print(json.dumps(levels[-1]), flush=True)
        rss_after = rss(server.proc.pid)
        burst = asyncio.run(malformed_burst(server.url, files, args.malformed))
        rss_burst = rss(server.proc.pid)
        health = httpx.get(server.url + "/healthz").json()
    result = {
        "command": command("load", argv),
        "machine": machine(),
        "server": {"url": "127.0.0.1 (loopback)", "device": health["device"], "max_queue": 64,
                   "models": model_names()},
        "files": {name: len(data) for name, data in files},
        "levels": levels,
        "malformed": burst,
        "server_rss_mb": {"before_load": round(rss_before / 2**20, 1),
                          "after_load": round(rss_after / 2**20, 1),
                          "after_malformed": round(rss_burst / 2**20, 1)},
        "healthy_after": health["status"] == "ok",
        "slow_clients": {"held": args.slow_clients, "answers": slow.answers},
        "idle_headers": {"held": args.idle_headers, "answers": idle.answers},
    }
    write_outputs(args.out, "load", result, markdown(result))


def markdown(r: dict) -> str:
    lines = [f"# Load on loopback (`{r['command']}`)", "",
             f"Server on {r['server']['device']} with models {', '.join(r['server']['models'])}, "
             f"{r['machine']['cpus']} CPUs "
             f"({r['machine']['platform']}); client on the same machine. Files: "
             + ", ".join(f"{k} {v} B" for k, v in r["files"].items()) + ".", "",
             "| concurrency | requests | throughput (req/s) | p50 (ms) | p99 (ms) | max (ms) "
             "| errors | wrong labels | server RSS after (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["levels"]:
        lines.append(f"| {x['concurrency']} | {x['requests']} | {x['throughput_rps']} | "
                     f"{x['p50_ms']} | {x['p99_ms']} | {x['max_ms']} | {x['errors']} | "
                     f"{x['label_mismatches']} | {x['server_rss_mb_after']} |")
    m = r["server_rss_mb"]
    lines += ["", f"Server RSS: {m['before_load']} MB before the load, {m['after_load']} MB "
              f"after it, {m['after_malformed']} MB after {r['malformed']['uploads']} malformed "
              f"uploads (answers: {r['malformed']['status_codes']}); healthy after: "
              f"{r['healthy_after']}."]
    slow = r.get("slow_clients") or {}
    if slow.get("held"):
        lines += ["", f"{slow['held']} stalled uploads were held open beside the load "
                  f"(reopened when dropped); what they were answered: {slow['answers']}."]
    idle = r.get("idle_headers") or {}
    if idle.get("held"):
        lines += ["", f"{idle['held']} connections stalled within their headers were held open "
                  f"beside the load (reopened when dropped); what they were answered: "
                  f"{idle['answers']}."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Structure-aware fuzzing of both wire formats and of DICOM input: every failure must be an
``SgcError``.

    python -m bench fuzz [--inputs 100000] [--dicom 2000] [--seed 0] [--out bench/results]

Inputs are built field by field from real files (the fixtures coded by every installed model,
and label streams of their labels) with valid CRCs, so they get past the checksum and reach
the parsers: each field (flags, model id, layout, shapes, latent shapes, geometry, metadata,
payload, classes) is replaced by a boundary or random value, metadata by hostile JSON (nested
1,000 deep, NaN, not an object, an undeclared or oversized frame), and a share get byte-level
edits with the CRC repaired.  A ``.sgc`` that decodes is segmented (g and s, labels at its
declared size); a label stream is decoded.  Reported: inputs, outcomes, exceptions by type
(anything but ``SgcError`` is a bug), the slowest input and the peak memory (VmHWM).
``--dicom`` more inputs are mutated DICOM files and series (``bench.dicomfuzz``), encoded.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import zstandard

import segcodec
from segcodec import container, labelcodec, wire, zoo

from . import dicomfuzz
from .common import FIXTURES, RESULTS, byte_edits, command, machine, status_kb, write_outputs

SIDES = (0, 1, 2, 7, 8, 35, 64, 127, 128, 255, 256, 4096, 4097, 65535, 65536, (1 << 21) - 1)


def _seed_files() -> list[bytes]:
    out = []
    for model in zoo.installed().values():
        pattern = "isic/ISIC_*[0-9].jpg" if model.ndim == 2 else "hippocampus/*[0-9].nii.gz"
        for path in sorted(FIXTURES.glob(pattern))[:1]:
            out.append(segcodec.encode(path, model=model, force=True,
                                       metadata={"site": "A"}))
    return out


def _varints(values) -> bytes:
    return b"".join(wire.varint(v) for v in values)


def _metadata(rng) -> bytes:
    kind = rng.integers(6)
    if kind == 0:
        text = b"[" * int(rng.integers(17, 2000)) + b"]" * int(rng.integers(0, 2000))
    elif kind == 1:
        text = b'{"a": NaN}'
    elif kind == 2:
        text = b"[1, 2, 3]"
    elif kind == 3:
        text = json.dumps({"k": "v" * int(rng.integers(1, 3000))}).encode()
    elif kind == 4:  # no declared content size
        return zstandard.ZstdCompressor(write_content_size=False).compress(b'{"a": 1}')
    else:
        return rng.bytes(int(rng.integers(0, 64)))
    return zstandard.ZstdCompressor(write_content_size=True).compress(text)


def _mutated_sgc(seed: bytes, rng) -> bytes:
    """A file whose fields are those of ``seed`` but one or more replaced."""
    header, payload = container.read(seed)
    flags = seed[3]
    model_id, ndim = header.model_id, header.ndim
    layout = ndim | (header.channels << 2)
    shape, latent = list(header.shape), list(header.latent_shape)
    geometry = wire.geometry(header.affine)[1]
    meta_frame = _metadata(rng) if rng.random() < 0.3 else \
        zstandard.ZstdCompressor(level=19, write_content_size=True).compress(b'{"site":"A"}')
    for _ in range(int(rng.integers(1, 4))):
        field = rng.integers(8)
        if field == 0:
            flags = int(rng.integers(256))
        elif field == 1:
            model_id = rng.choice([m.model_id for m in zoo.installed().values()] +
                                  [rng.bytes(6)])
        elif field == 2:
            layout = int(rng.integers(256))
        elif field == 3:
            shape = [int(rng.choice(SIDES)) for _ in range(int(rng.integers(1, 5)))]
        elif field == 4:
            latent = [int(rng.choice(SIDES)) for _ in range(int(rng.integers(1, 6)))]
        elif field == 5:
            geometry = np.array(rng.choice([0.0, 1.0, np.nan, np.inf, 1e38, -1.0], 12),
                                dtype="<f4").tobytes()[:int(rng.choice([24, 48, 7]))]
        elif field == 6:
            payload = rng.bytes(int(rng.integers(0, 400)))
        else:
            payload = payload[:int(rng.integers(0, len(payload) + 1))]
    body = b"SG" + bytes([1, flags]) + bytes(model_id) + bytes([layout]) + _varints(shape) + \
        _varints(latent) + geometry
    if flags & 2:
        body += wire.varint(len(meta_frame)) + meta_frame
    return wire.with_crc(body + payload)


def _mutated_labels(rng) -> bytes:
    shape = [int(rng.choice(SIDES)) for _ in range(int(rng.integers(2, 4)))]
    flags = int(rng.choice([0, 0x01, 0x11, int(rng.integers(256))]))
    geometry = rng.bytes(int(rng.choice([0, 24, 48])))
    body = b"SL" + bytes([1, flags, len(shape) if rng.random() < 0.9 else int(rng.integers(256))])
    body += _varints(shape) + bytes([int(rng.integers(256))]) + geometry
    return wire.with_crc(body + rng.bytes(int(rng.integers(0, 200))))


def _byte_edits(blob: bytes, rng) -> bytes:
    """Edits of a file's bytes before its CRC, the CRC then repaired."""
    return wire.with_crc(byte_edits(blob[:-4], rng))


def run_one(blob: bytes) -> str:
    """The outcome of one input: "decoded", "refused" or the name of an unexpected error."""
    try:
        if blob[:2] == b"SL":
            labelcodec.decode(blob)
        else:
            segcodec.segment(blob, device="cpu")
        return "decoded"
    except segcodec.SgcError:
        return "refused"


def run_dicom(seed: int, n: int) -> dict:
    """``n`` mutated DICOM inputs drawn from ``seed``, each encoded; outcomes as ``run_chunk``'s
    ("unwritable": a mutation pydicom would not write, so not an input)."""
    rng = np.random.default_rng(seed)
    sets, series = dicomfuzz.seed_inputs()
    outcomes, unexpected, examples = collections.Counter(), collections.Counter(), {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of every odd value it reads
        for _ in range(n):
            path = dicomfuzz.mutated_input(sets, series, rng, Path(tmp))
            if path is None:
                outcomes["unwritable"] += 1
                continue
            try:
                segcodec.encode(path, force=True)
                outcome = "decoded"
            except segcodec.SgcError as exc:
                outcome = "refused" if "\n" not in str(exc) else "refused in several lines"
            except Exception as exc:  # a bug
                outcome = type(exc).__name__
                examples.setdefault(outcome, repr(exc)[:300])
            if outcome not in ("decoded", "refused"):
                unexpected[outcome] += 1
            outcomes[outcome] += 1
    return {"outcomes": outcomes, "unexpected": unexpected, "examples": examples}


def run_chunk(seed: int, n: int) -> dict:
    """``n`` inputs drawn from ``seed``, in this process, on one thread (as the command line
    runs: with torch's two, a busy machine made each input many times slower)."""
    from segcodec import backend
    backend.set_threads(1)
    rng = np.random.default_rng(seed)
    seeds = _seed_files()
    streams = [labelcodec.encode(segcodec.segment(s, device="cpu")) for s in seeds[:4]]
    outcomes, unexpected, examples, slowest = collections.Counter(), collections.Counter(), \
        {}, (0.0, "")
    for _ in range(n):
        kind = rng.integers(4)
        if kind == 0:
            blob = _mutated_labels(rng)
        elif kind == 1:
            blob = _byte_edits(seeds[int(rng.integers(len(seeds)))] if rng.random() < 0.7
                               else streams[int(rng.integers(len(streams)))], rng)
        else:
            blob = _mutated_sgc(seeds[int(rng.integers(len(seeds)))], rng)
        t0 = time.perf_counter()
        try:
            outcome = run_one(blob)
        except Exception as exc:  # a bug: recorded with an example, and the run goes on
            outcome = type(exc).__name__
            unexpected[outcome] += 1
            examples.setdefault(outcome, blob.hex())
        seconds = time.perf_counter() - t0
        if seconds > slowest[0]:
            slowest = (seconds, blob.hex())
        outcomes[outcome] += 1
    return {"outcomes": outcomes, "unexpected": unexpected, "examples": examples,
            "slowest": slowest, "peak_kb": status_kb("VmHWM")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="processes, each with its own seed")
    ap.add_argument("--dicom", type=int, default=2000, help="mutated DICOM inputs")
    ap.add_argument("--smoke", action="store_true", help="500 inputs, 100 of them DICOM")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n = 500 if args.smoke else args.inputs
    t_start = time.perf_counter()
    shares = [n // args.jobs + (j < n % args.jobs) for j in range(args.jobs)]
    if args.jobs == 1:
        parts = [run_chunk(args.seed, n)]
    else:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(args.jobs) as pool:
            parts = list(pool.map(run_chunk, [args.seed + j for j in range(args.jobs)], shares))
    dicom = run_dicom(args.seed, 100 if args.smoke else args.dicom)
    outcomes = sum((p["outcomes"] for p in parts), collections.Counter())
    unexpected = sum((p["unexpected"] for p in parts), collections.Counter())
    slowest = max(p["slowest"] for p in parts)
    result = {"command": command("fuzz", argv), "machine": machine(), "inputs": n,
              "jobs": args.jobs, "seconds": round(time.perf_counter() - t_start, 1),
              "outcomes": dict(outcomes), "unexpected_exceptions": dict(unexpected),
              "examples": {k: v for p in parts for k, v in p["examples"].items()},
              "max_seconds_per_input": round(slowest[0], 4), "slowest_input_hex": slowest[1],
              "peak_rss_mb": round(max(p["peak_kb"] for p in parts) / 1024, 1),
              "dicom": {"inputs": sum(dicom["outcomes"].values()),
                        "outcomes": dict(dicom["outcomes"]),
                        "unexpected_exceptions": dict(dicom["unexpected"]),
                        "examples": dicom["examples"]}}
    lines = ["# Structure-aware fuzzing (`python -m bench fuzz`)", "",
             f"`{result['command']}`", "",
             f"{n} inputs in {result['seconds']} s ({args.jobs} process(es)): " +
             ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) + ".", "",
             f"- Exceptions other than SgcError: {dict(unexpected) or 'none'}.",
             f"- Slowest input: {result['max_seconds_per_input'] * 1e3:.1f} ms.",
             f"- Peak memory of a fuzzing process (VmHWM, models loaded): "
             f"{result['peak_rss_mb']} MB.", "",
             f"{result['dicom']['inputs']} mutated DICOM inputs (`bench/dicomfuzz.py`), each "
             "encoded: " + ", ".join(f"{k} {v}" for k, v in sorted(dicom["outcomes"].items()))
             + ".", "",
             f"- Exceptions other than SgcError, or errors of several lines: "
             f"{dict(dicom['unexpected']) or 'none'}."]
    write_outputs(args.out, "fuzz", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

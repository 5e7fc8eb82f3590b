"""Files per second of a cohort: a plain loop against Dask LocalClusters of 1..N workers.

    python -m bench cohort [--data ../shared/data] [--files 200] [--workers 1 2]

Encodes, then segments, the same files (hippocampus volumes and ISIC photographs, from
--data or, without it, copies of fixtures/) with ``segcodec.batch`` in this process, then on
a fresh LocalCluster per worker count (cluster start-up not counted; the first file's model
loading is).  Every cluster's outputs are checked to be byte-identical to the loop's.  Ratios
are against the loop measured in the same run; this machine's cores bound what more workers
can give.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from segcodec import batch, cluster

from .common import FIXTURES, RESULTS, command, machine, write_outputs


def _inputs(data: Path | None, n: int, folder: Path) -> list[Path]:
    if data:
        hippo = sorted((data / "msd_hippocampus" / "imagesTr").glob("hippocampus_*.nii.gz"))
        isic = sorted((data / "isic2017" / "val" / "images").glob("ISIC_*.jpg"))
        pool = [p for pair in zip(hippo, isic) for p in pair]
    else:
        pool = sorted((FIXTURES / "hippocampus").glob("hippocampus_*[0-9].nii.gz")) + \
            sorted((FIXTURES / "isic").glob("ISIC_*[0-9].jpg"))
    files = []
    for i in range(n):
        src = pool[i % len(pool)]
        files.append(folder / f"{i:05d}_{src.name}")
        shutil.copy(src, files[-1])
    return files


def _timed(fn) -> tuple[list, float]:
    t0 = time.perf_counter()
    results = fn()
    return results, time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench cohort", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="../shared/data (default: fixtures/)")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--smoke", action="store_true", help="12 files, 1 worker")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n, counts = (12, [1]) if args.smoke else (args.files, args.workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        files = _inputs(args.data, n, tmp / "in")
        runs = [("loop", None)] + [(f"{w} worker(s)", w) for w in counts]
        reference = {}
        for name, workers in runs:
            sgc, labels = tmp / name / "sgc", tmp / name / "labels"
            sgc.mkdir(parents=True)
            labels.mkdir()

            def both(client):
                encoded, t_enc = _timed(lambda: batch.encode_many(files, sgc, client=client))
                outs = [r.dst for r in encoded if not r.error]
                segmented, t_seg = _timed(lambda: batch.segment_many(outs, labels,
                                                                     client=client))
                return encoded + segmented, t_enc, t_seg

            if workers is None:
                results, t_enc, t_seg = both(None)
            else:
                with cluster.connect(workers=workers) as client:
                    results, t_enc, t_seg = both(client)
            if any(r.error for r in results):
                raise ValueError(f"{name}: {[r.error for r in results if r.error][:3]}")
            outputs = {r.dst.name: r.dst.read_bytes() for r in results}
            if workers is None:
                reference = outputs
            elif outputs != reference:
                raise ValueError(f"{name}: outputs differ from the loop's")
            rows.append({"run": name, "workers": workers or 0, "files": n,
                         "encode_files_per_s": round(n / t_enc, 2),
                         "segment_files_per_s": round(n / t_seg, 2)})
    base = rows[0]
    for r in rows:
        r["encode_x_loop"] = round(r["encode_files_per_s"] / base["encode_files_per_s"], 2)
        r["segment_x_loop"] = round(r["segment_files_per_s"] / base["segment_files_per_s"], 2)
    result = {"command": command("cohort", argv), "machine": machine(), "rows": rows}
    lines = ["# Cohorts: files per second, a loop against Dask LocalClusters", "",
             f"`{result['command']}`", "", "Outputs of every cluster are byte-identical to "
             "the loop's.", "",
             "| run | files | encode files/s | x loop | segment files/s | x loop |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['files']} | {r['encode_files_per_s']:.1f} | "
              f"{r['encode_x_loop']:.2f} | {r['segment_files_per_s']:.1f} | "
              f"{r['segment_x_loop']:.2f} |" for r in rows]
    write_outputs(args.out, "cohort", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

"""How long the clinic's commands take as whole processes, against ``python -c pass`` in the
same run, and how big their install is.

    python -m bench startup [--repeat 10] [--python .venv-clinic/bin/python] [--out ...]

``--help``, ``--version``, ``info``, ``models`` and ``encode`` (C in numpy) import neither
torch nor numba; ``send`` encodes, uploads to a ``segcodec serve`` on loopback (started from
this interpreter) and decodes the label stream, with numba's kernels where the environment has
it and numpy's otherwise (``segcodec.labelkernels``).  ``--python`` runs the commands with
another environment's interpreter, such as a fresh venv of ``pip install segcodec`` with no
extra, whose site-packages size is reported beside a bare venv's (pip and setuptools).
Medians of ``--repeat`` fresh processes, alternated, after one untimed round; and the label
streams of the fixtures decoded in this process by each kernel set.  The commands run with
Python's bytecode caches, as ``pip install`` writes them: a ``PYTHONDONTWRITEBYTECODE`` in
this environment would otherwise have every process compile segcodec's sources again.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import FIXTURES, RESULTS, LocalServer, command, machine, write_outputs


def site_packages_mb(python: str) -> float:
    """Size of the environment's site-packages (purelib and platlib), in MB."""
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'));"
                          "print(sysconfig.get_path('platlib'))"],
                         check=True, capture_output=True, text=True).stdout.split()
    total = 0
    for folder in sorted(set(out)):
        for root, _, files in os.walk(folder):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                         if not os.path.islink(os.path.join(root, f)))
    return round(total / 1e6, 1)


def bare_venv_mb(python: str) -> float:
    """The site-packages of a fresh venv of ``python``'s interpreter before any install."""
    base = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([base, "-m", "venv", tmp], check=True, capture_output=True)
        return site_packages_mb(str(Path(tmp) / "bin" / "python"))


def label_decoding(repeat: int) -> list[dict]:
    """Milliseconds to decode the label streams of an ISIC mask and a hippocampus label
    volume in this process, with each of ``segcodec.labelkernels``' kernel sets (medians)."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    from segcodec import labelcodec, labelkernels
    maps = {"an ISIC mask": np.asarray(Image.open(FIXTURES / "isic"
                                                  / "ISIC_0001769_segmentation.png")) > 0,
            "a hippocampus label volume": np.asarray(nib.load(
                FIXTURES / "hippocampus" / "hippocampus_019_labels.nii.gz").dataobj)}
    rows, chosen = [], labelkernels.fastest
    try:
        for name, labels in maps.items():
            stream = labelcodec.encode(labels.astype(np.uint8))
            row = {"map": name, "shape": list(labels.shape), "bytes": len(stream)}
            for kernels, fns in labelkernels.KERNELS.items():
                labelkernels.fastest = fns
                labelcodec.decode(stream)  # numba compiles (or loads its cache) once
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    labelcodec.decode(stream)
                    times.append(time.perf_counter() - t0)
                row[f"{kernels}_ms"] = round(1000 * statistics.median(times), 2)
            rows.append(row)
    finally:
        labelkernels.fastest = chosen
    return rows


def _seconds(argv: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="2 repeats")
    ap.add_argument("--python", help="the interpreter to run the commands with (default: this)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    repeat = 2 if args.smoke else args.repeat
    python = args.python or sys.executable
    cli = [python, "-m", "segcodec.cli.main"]
    with tempfile.TemporaryDirectory() as tmp, LocalServer("--device", "cpu") as server:
        image = Path(tmp) / "a.jpg"
        shutil.copy(FIXTURES / "isic" / "ISIC_0001769.jpg", image)
        volume = Path(tmp) / "v.nii.gz"
        shutil.copy(FIXTURES / "hippocampus" / "hippocampus_019.nii.gz", volume)
        subprocess.run(cli + ["encode", str(image)], check=True, capture_output=True)
        commands = {"python -c pass": [python, "-c", "pass"],
                    "segcodec --help": cli + ["--help"],
                    "segcodec --version": cli + ["--version"],
                    "segcodec info": cli + ["info", str(image.with_suffix(".sgc"))],
                    "segcodec models": cli + ["models"],
                    "segcodec encode (a JPEG)": cli + ["encode", str(image), "--force",
                                                       "-o", f"{tmp}/b.sgc"],
                    "segcodec encode (a NIfTI volume)": cli + ["encode", str(volume), "-o",
                                                               f"{tmp}/c.sgc", "--force"],
                    "segcodec send (a JPEG)": cli + [
                        "send", str(image), "--remote", server.url, "-o",
                        f"{tmp}/b.labels.png", "--force"],
                    "segcodec send (a NIfTI volume)": cli + [
                        "send", str(volume), "--remote", server.url, "-o",
                        f"{tmp}/c.labels.nii.gz", "--force"]}
        times = {name: [] for name in commands}
        for round_ in range(repeat + 1):
            for name, args_ in commands.items():
                seconds = _seconds(args_)
                if round_:  # the first writes the bytecode caches
                    times[name].append(seconds)
        has = {m: subprocess.run([python, "-c", f"import {m}"], capture_output=True).returncode
               == 0 for m in ("torch", "numba")}
    base = statistics.median(times["python -c pass"])
    rows = [{"command": name, "median_s": round(statistics.median(t), 4),
             "ratio_to_python": round(statistics.median(t) / base, 2)}
            for name, t in times.items()]
    result = {"command": command("startup", argv), "machine": machine(), "repeat": repeat,
              "rows": rows, "torch_installed": has["torch"], "numba_installed": has["numba"],
              "site_packages_mb": site_packages_mb(python), "bare_venv_mb": bare_venv_mb(python),
              "label_decoding": label_decoding(repeat)}
    lines = ["# Start-up time", "", f"`{result['command']}`", "",
             f"Environment: {python} ({'with' if has['torch'] else 'without'} torch, "
             f"{'with' if has['numba'] else 'without'} numba; site-packages "
             f"{result['site_packages_mb']} MB, of which a bare venv's pip and setuptools are "
             f"{result['bare_venv_mb']} MB).", "",
             "| command | median s | x `python -c pass` |", "|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.3f} | {r['ratio_to_python']:.1f} |"
              for r in rows]
    kernels = [k for k in result["label_decoding"][0] if k.endswith("_ms")]
    lines += ["", "Decoding a label stream in this process (`segcodec.labelkernels`; ms, median):",
              "", "| map | shape | bytes | " + " | ".join(kernels) + " |",
              "|---" * (3 + len(kernels)) + "|"]
    lines += [f"| {r['map']} | {'x'.join(map(str, r['shape']))} | {r['bytes']} | "
              + " | ".join(f"{r[k]:.1f}" for k in kernels) + " |"
              for r in result["label_decoding"]]
    write_outputs(args.out, "startup", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

"""How long the light commands take to start, against ``python -c pass`` in the same run.

    python -m bench startup [--repeat 10] [--out bench/results]

``--help``, ``--version``, ``info`` and ``models`` import neither torch nor numba, so they
should cost little more than the interpreter itself; ``encode`` (which needs torch) is
measured beside them for scale.  Medians of ``--repeat`` fresh processes, alternated.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import FIXTURES, RESULTS, command, machine, write_outputs


def _seconds(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="2 repeats")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    repeat = 2 if args.smoke else args.repeat
    cli = [sys.executable, "-m", "segcodec.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "a.jpg"
        shutil.copy(FIXTURES / "isic" / "ISIC_0001769.jpg", image)
        subprocess.run(cli + ["encode", str(image)], check=True, capture_output=True)
        commands = {"python -c pass": [sys.executable, "-c", "pass"],
                    "segcodec --help": cli + ["--help"],
                    "segcodec --version": cli + ["--version"],
                    "segcodec info": cli + ["info", str(image.with_suffix(".sgc"))],
                    "segcodec models": cli + ["models"],
                    "segcodec encode (torch)": cli + ["encode", str(image), "--force"]}
        times = {name: [] for name in commands}
        for _ in range(repeat):
            for name, args_ in commands.items():
                times[name].append(_seconds(args_))
    base = statistics.median(times["python -c pass"])
    rows = [{"command": name, "median_s": round(statistics.median(t), 4),
             "ratio_to_python": round(statistics.median(t) / base, 2)}
            for name, t in times.items()]
    result = {"command": command("startup", argv), "machine": machine(), "repeat": repeat,
              "rows": rows}
    lines = ["# Start-up time", "", f"`{result['command']}`", "",
             "| command | median s | x `python -c pass` |", "|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.3f} | {r['ratio_to_python']:.1f} |"
              for r in rows]
    write_outputs(args.out, "startup", result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

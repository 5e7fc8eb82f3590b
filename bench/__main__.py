"""python -m bench NAME [options]: run one benchmark module of this folder.

    python -m bench rate --data ../shared/data      # rate against Dice, every codec
    python -m bench ablation                        # D1-D4 table from rate.json and runs/
    python -m bench speed --data ../shared/data     # encode/decode time, memory, scaling
    python -m bench latency                         # the paper's Table 2, end to end
    python -m bench figures --data ../shared/data   # Fig. 4-style pictures
    python -m bench evaluate --data ../shared/data  # the shipped models alone
    python -m bench load                            # the server under concurrent clients
    python -m bench references                      # ship runs/<task>-seg as the references
    python -m bench startup                         # light commands against python -c pass
    python -m bench validation --data ../shared/data RUN...  # choose runs on validation
    python -m bench cohort --data ../shared/data    # files/s: a loop against Dask workers
    python -m bench fuzz                            # 100,000 structure-aware inputs
    python -m bench attacks                         # the audit's attack files: time, memory
    python -m bench domain --data ../shared/data    # what the domain check refuses
    python -m bench encoders --data ../shared/data  # the numpy encoder against torch's C

Each module's --help lists its options; ``--smoke`` (where offered) runs on fixtures/
and writes to a scratch folder unless --out says otherwise.
"""
import importlib
import sys
import tempfile
from pathlib import Path

COMMANDS = ("rate", "ablation", "speed", "latency", "figures", "evaluate", "load",
            "references", "startup", "validation", "cohort", "fuzz", "attacks", "domain",
            "encoders")
SMOKE_OUT = Path(tempfile.gettempdir()) / "segcodec-bench-smoke"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.exit(f"python -m bench: error: unknown benchmark {name!r}; one of "
                 f"{', '.join(COMMANDS)}")
    if "--smoke" in args and "--out" not in args:
        # A smoke run measures nothing worth keeping: never over the committed results.
        args += ["--out", str(SMOKE_OUT)]
        print(f"bench {name}: --smoke results go to {SMOKE_OUT}", file=sys.stderr)
    module = importlib.import_module(f"bench.{name}")
    try:
        module.main(args)
    except (OSError, ValueError) as exc:
        sys.exit(f"python -m bench {name}: error: {exc}")


if __name__ == "__main__":
    main()

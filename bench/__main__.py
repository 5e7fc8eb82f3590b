"""python -m bench NAME [options]: run one benchmark module of this folder.

    python -m bench rate --data ../shared/data      # rate against Dice, every codec
    python -m bench ablation                        # D1-D4 table from rate.json and runs/
    python -m bench speed --data ../shared/data     # encode/decode time, memory, scaling
    python -m bench latency                         # the paper's Table 2, end to end
    python -m bench figures --data ../shared/data   # Fig. 4-style pictures
    python -m bench evaluate --data ../shared/data  # the shipped models alone
    python -m bench load                            # the server under concurrent clients
    python -m bench references                      # ship runs/<task>-seg as the references

Each module's --help lists its options; ``--smoke`` (where offered) runs on fixtures/.
"""
import importlib
import sys

COMMANDS = ("rate", "ablation", "speed", "latency", "figures", "evaluate", "load",
            "references")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    module = importlib.import_module(f"bench.{sys.argv[1]}")
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()

"""The clinic's install, `pip install segcodec` with no extra: .ci/run runs this with a fresh
venv's python.  It has no torch, writes every golden file again byte for byte, encodes,
inspects and lists models from the command line, and `segment` says which extra it needs.
Without numba, the golden label streams decode and encode again byte for byte (numpy's
kernels)."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import segcodec

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "fixtures" / "golden"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segcodec.cli.main", *args],
                          capture_output=True, text=True)


def main() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch is installed: this is not the clinic's install")
    from segcodec import labelcodec, labelkernels
    assert list(labelkernels.KERNELS) == ["numpy"], "numba is installed"
    pins = json.loads((GOLDEN / "golden.json").read_text())
    for name, pin in sorted(pins.items()):
        data = segcodec.encode(GOLDEN.parent / pin["source"], model=pin["model_id"], force=True)
        assert data == (GOLDEN / name).read_bytes(), f"{name} differs"
        # The server's label streams, read and written again by the numpy kernels.
        stream = (GOLDEN / name).with_suffix(".labels").read_bytes()
        got = labelcodec.decode(stream)
        assert labelcodec.encode(got.labels, got.classes, affine=got.affine,
                                 source=got.source) == stream, f"{name}'s labels differ"
    with tempfile.TemporaryDirectory() as tmp:
        for source in ("isic/ISIC_0001769.jpg", "hippocampus/hippocampus_019.nii.gz"):
            out = Path(tmp) / (Path(source).name.split(".")[0] + ".sgc")
            run = cli("encode", str(REPO / "fixtures" / source), "-o", str(out))
            assert run.returncode == 0, run.stderr
            assert cli("info", str(out)).returncode == 0
        assert cli("models", "--json").returncode == 0
        run = cli("segment", str(out))
        assert run.returncode == 1 and run.stderr.strip().count("\n") == 0, run.stderr
        assert "pip install 'segcodec[server]'" in run.stderr, run.stderr
    print(f"clinic install: no torch, no numba; {len(pins)} golden files and their label "
          "streams written again byte for byte; "
          "encode, info and models run; segment names its extra")


if __name__ == "__main__":
    main()

"""The clinic's install, `pip install segcodec` with no extra: .ci/run runs this with a fresh
venv's python.  It has no torch, writes every golden file again byte for byte, encodes,
inspects and lists models from the command line, and `segment` says which extra it needs.
Without numba, the golden label streams decode and encode again byte for byte (numpy's
kernels).  Where the server's venv is beside it (.venv, as .ci/run builds it first), `send`
gets labels for both tasks from a server started there."""
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import segcodec

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "fixtures" / "golden"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segcodec.cli.main", *args],
                          capture_output=True, text=True)


def sends(tmp: Path) -> bool:
    """``segcodec send`` of an image and a volume to a server run by .venv's python; False
    where there is no such venv."""
    server_python = REPO / ".venv" / "bin" / "python"
    if not server_python.exists():
        return False
    from segcodec.remote import Client, ServerUnreachableError
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(server_python), "-m", "segcodec.cli.main", "serve", "--port",
                               str(port), "--device", "cpu", "--log-level", "warning"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        with Client(url, timeout=5) as client:
            while True:
                try:
                    client.health()
                    break
                except ServerUnreachableError:
                    assert server.poll() is None, "the server exited"
                    assert time.monotonic() < deadline, "the server did not start in 120 s"
                    time.sleep(0.2)
        for source, suffix in (("isic/ISIC_0001769.jpg", ".png"),
                               ("hippocampus/hippocampus_019.nii.gz", ".nii.gz")):
            out = tmp / (Path(source).name.split(".")[0] + ".sent" + suffix)
            run = cli("send", str(REPO / "fixtures" / source), "--remote", url, "-o", str(out))
            assert run.returncode == 0, run.stderr
            if suffix == ".png":
                from PIL import Image
                with Image.open(out) as image, Image.open(REPO / "fixtures" / source) as im:
                    labels, shape = np.asarray(image), im.size[::-1]
            else:
                import nibabel as nib
                labels = np.asarray(nib.load(out).dataobj)
                shape = nib.load(REPO / "fixtures" / source).shape
            assert labels.shape == tuple(shape) and labels.max() > 0, (source, labels.shape)
    finally:
        server.terminate()
        server.wait(30)
    return True


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
        sent = sends(Path(tmp))
    print(f"clinic install: no torch, no numba; {len(pins)} golden files and their label "
          "streams written again byte for byte; "
          "encode, info and models run; segment names its extra"
          + ("; send got labels for an image and a volume" if sent else ""))


if __name__ == "__main__":
    main()

"""The README's "Try it" commands, run as written (twice: they failed the second time)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_try_it_runs_twice():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Try it.*?```sh\n(.*?)\n```", text, re.S).group(1)
    # The install is this checkout's (done by CI); the rest runs as a user types it.
    commands = block.split(" && ")
    assert commands[:4] == ["python -m venv .venv", ". .venv/bin/activate",
                            "pip install torch==2.13.0", 'pip install -e ".[server]"']
    script = " && ".join(commands[4:])
    assert "segcodec segment" in script
    bin_dir = Path(sys.executable).parent
    for _ in range(2):
        proc = subprocess.run(["bash", "-c", f"PATH={bin_dir}:$PATH; {script}"], cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "hippo.sgc: segcodec format v1" in proc.stdout

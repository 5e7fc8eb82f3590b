"""What several benchmark modules share: paths, tasks, provenance, test cases, the reference
segmentor, Dice, timing and ``segcodec serve`` on loopback."""
from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import torch

import segcodec
from segcodec import metrics, zoo
from segcodec.train import data as training_data
from segcodec.train import loop, recipes
from segcodec.transforms import labels_from_logits, working_grid

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FIXTURES = REPO / "fixtures"
RUNS = REPO / "runs"


# Tasks

NDIM = {"isic": 2, "hippocampus": 3}
KIND = {task: f"{ndim}d" for task, ndim in NDIM.items()}  # segcodec.encode's kind
LABELS = {task: recipes.TASKS[task]["labels"] for task in NDIM}
CHANNELS = {"isic": 3, "hippocampus": 1}
TITLES = {"isic": "ISIC 2017 val", "hippocampus": "hippocampus test split"}
# A user's data set folder (``register``): its task's root, where its test cases are read.
ROOTS: dict[str, Path] = {}


def n_classes(task: str) -> int:
    """The task's classes, background included."""
    return len(LABELS[task])


def register(root: Path) -> str:
    """A data set folder as ``segcodec train`` reads it (``segcodec.datasets``), made a bench
    task of this process; returns its name, the task key its runs are named by.  Its test
    cases are its imagesTs/ + labelsTs/, or where it has none the validation split carved
    from its training cases (the cases ``train`` picks weights on: say so with the rows)."""
    from segcodec import datasets as folders
    from segcodec.train import plan
    ds = folders.open(root)
    task = plan.task_key(ds.name)
    if task in recipes.TASKS:  # as recipes.for_dataset names it
        task += "own"
    NDIM[task], KIND[task] = ds.ndim, f"{ds.ndim}d"
    LABELS[task], CHANNELS[task], ROOTS[task] = ds.labels, ds.channels, Path(root)
    TITLES[task] = f"{ds.name}, " + (f"its {len(ds.test)} test cases" if ds.test else
                                     "the validation split carved from its training cases")
    return task


# Provenance

def machine(threads: int | None = None) -> dict:
    """The machine and torch a result was measured with (``threads``: as set for the run)."""
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": threads or torch.get_num_threads()}


def command(name: str, argv) -> str:
    """The command line that reproduces a run of ``python -m bench NAME`` (argv None: sys.argv)."""
    return " ".join([f"python -m bench {name}", *(sys.argv[1:] if argv is None else argv)])


def model_names() -> list[str]:
    """``name id`` of every installed segcodec model."""
    return [f"{m['name']} {m['id']}" for m in segcodec.list_models()]


def and_join(words) -> str:
    """The words joined as in "a, b and c"."""
    words = list(words)
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def write_outputs(out: Path, name: str, result: dict, markdown: str) -> None:
    """NAME.json and NAME.md under ``out``, and the markdown on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


# Test cases

def fixture_pairs(task: str) -> list[tuple[Path, Path]]:
    """(image, labels) paths of the task's files in fixtures/, sorted."""
    base = FIXTURES / task
    if task == "isic":
        return [(p, p.with_name(p.stem + "_segmentation.png"))
                for p in sorted(base.glob("ISIC_*.jpg"))]
    return [(p, p.with_name(p.name.replace(".nii.gz", "_labels.nii.gz")))
            for p in sorted(base.glob("*.nii.gz")) if not p.name.endswith("_labels.nii.gz")]


def to_chw(array: np.ndarray, ndim: int) -> np.ndarray:
    """A user's array ((H, W, 3) image or volume) channels first, as the networks take it."""
    return np.moveaxis(array, -1, 0) if ndim == 2 else array[None].astype(np.float32)


def from_chw(image: np.ndarray, ndim: int) -> np.ndarray:
    """A channels-first image (as ``training_data.read_pair`` gives it) as ``segcodec.encode``
    takes it: (H, W, 3) or (I, J, K), contiguous."""
    return np.ascontiguousarray(np.moveaxis(image, 0, -1) if ndim == 2 else image[0])


@dataclass
class Sample:
    """One test case: the input as a user would code it, its true labels and its geometry."""

    name: str
    task: str  # "isic" or "hippocampus"
    array: np.ndarray  # as segcodec.encode takes it: (H, W, 3) uint8 or (I, J, K)
    truth: np.ndarray | None = None
    affine: np.ndarray | None = None  # a volume's NIfTI affine, as the user's file has it
    # The pixels as their file stores them (a volume's NIfTI dtype; most are float32, some
    # uint8): what the lossless references code and "uncompressed" counts.  Default: array.
    stored: np.ndarray | None = None
    chw: np.ndarray | None = None  # channels first, as the networks take it; default from array

    def __post_init__(self):
        if self.stored is None:
            self.stored = self.array
        if self.chw is None:
            self.chw = to_chw(self.array, NDIM[self.task])

    @classmethod
    def read(cls, task: str, image_path: Path, label_path: Path) -> "Sample":
        image, truth = training_data.read_pair(image_path, label_path)
        array = from_chw(image, NDIM[task])
        if NDIM[task] == 2:
            return cls(image_path.name, task, array, truth, chw=image)
        import nibabel as nib
        nii = nib.load(image_path)
        return cls(image_path.name, task, array, truth, nii.affine,
                   array.astype(nii.get_data_dtype()), image)

    @property
    def kind(self) -> str:
        return KIND[self.task]

    @property
    def pixels(self) -> int:
        """Pixels (voxels) of the labels: what a rate in bits per pixel divides by."""
        return self.truth.size


def task_pairs(task: str, data: Path | None) -> list[tuple[Path, Path]]:
    """(image, labels) paths of the task's test cases, from ``data`` or (None) fixtures/; a
    registered data set's from its own folder."""
    if task in ROOTS:
        return training_data.task_pairs(task, ROOTS[task], "test") or \
            training_data.task_pairs(task, ROOTS[task], "val")
    return training_data.task_pairs(task, data, "test") if data else fixture_pairs(task)


def load_samples(data: Path | None, counts: dict[str, int]) -> list[Sample]:
    """The first ``counts[task]`` test cases of each task, from ``data`` or fixtures/."""
    return [Sample.read(task, *pair) for task, n in counts.items()
            for pair in task_pairs(task, data)[:n]]


# The reference segmentor: a network trained on uncompressed images that segments what the
# traditional codecs decode

class Segmentor:
    """A reference network on the working grid: image (channels first) -> labels at full size."""

    def __init__(self, net, cfg, name: str):
        self.net, self.cfg, self.name = net, cfg, name

    @torch.no_grad()
    def __call__(self, image_chw: np.ndarray, shape) -> np.ndarray:
        return labels_from_logits(self.net(self.grid(image_chw)), shape)

    def grid(self, image_chw: np.ndarray) -> torch.Tensor:
        return working_grid(image_chw, self.cfg.normalisation, self.cfg.arch["work_shape"])


def checkpoint(runs: Path, task: str, design: str) -> Path:
    """Where ``segcodec train`` leaves the ``<task>-<design>`` recipe's network."""
    return runs / f"{task}-{design}" / "checkpoint.pt"


def untrained(recipe: str, normalisation: dict):
    """(net, cfg) of ``recipe`` with seeded random weights: same every run."""
    torch.manual_seed(0)
    cfg = replace(recipes.config(recipe), normalisation=normalisation)
    return loop.build_net(cfg).eval(), cfg


def smoke_normalisation(task: str) -> dict:
    """Normalisation for untrained networks, which have no training set to fit one on: the
    shipped 2D model's for ISIC, z-score for volumes."""
    return zoo.default_for(2).manifest.normalisation if task == "isic" else {"kind": "zscore"}


def untrained_segmentor(task: str, name: str) -> Segmentor:
    return Segmentor(*untrained(f"{task}-seg", smoke_normalisation(task)), name)


def mean_dice(labels: np.ndarray, truth: np.ndarray, task: str) -> float:
    """Dice averaged over the task's foreground classes (1.0 for a class both lack)."""
    return statistics.fmean(metrics.scores(labels, truth, n_classes(task))["dice"])


def byte_edits(data: bytes, rng) -> bytes:
    """One to four random edits of ``data`` (the fuzzers'): a byte replaced, a run of up to
    five deleted (or everything from a point: a truncation), or up to five random bytes
    inserted."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(len(b) + 1))
        op = rng.integers(4)
        if op == 0 and i < len(b):
            b[i] = int(rng.integers(256))
        elif op == 1:
            del b[i:i + int(rng.integers(1, 6))]
        elif op == 2:
            del b[i:]
        else:
            b[i:i] = rng.bytes(int(rng.integers(1, 6)))
    return bytes(b)


# Timing and memory

def timed(fn, *args):
    """(fn(*args), seconds it took)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def samples(fn, repeat: int, budget_s: float | None = None) -> list[float]:
    """Seconds of ``repeat`` calls after one warm-up call (fewer if they would pass budget_s)."""
    first = timed(fn)[1]
    if budget_s is not None:
        repeat = max(1, min(repeat, int(budget_s / max(first, 1e-9))))
    return [timed(fn)[1] for _ in range(repeat)]


def interleaved(ops: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds of each operation in ``repeat`` rounds that run every operation once, after a
    warm-up round.  A burst of load from elsewhere on a shared machine then slows the
    operations of a round alike, so the ratios of their medians move less than the times."""
    for fn in ops.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeat):
        for name, fn in ops.items():
            times[name].append(timed(fn)[1])
    return times


def median_seconds(fn, repeat: int) -> float:
    """Median of ``samples(fn, repeat)``."""
    return statistics.median(samples(fn, repeat))


def status_kb(field: str, pid: int | str = "self") -> int:
    """A kB field (VmRSS, VmHWM, ...) of /proc/PID/status."""
    path = Path(f"/proc/{pid}/status")
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {path}")


# The real server

class LocalServer:
    """``segcodec serve`` as a subprocess on a free loopback port."""

    def __init__(self, *args: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The serve command itself, whether or not `segcodec` has it registered yet.
        self.cmd = [sys.executable, "-c", "from segcodec.cli.service import serve; serve()",
                    "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                    *args]

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not start within 120 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stderr.close()

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ISIC = sorted((FIXTURES / "isic").glob("ISIC_*[0-9].jpg"))
HIPPO = sorted(p for p in (FIXTURES / "hippocampus").glob("hippocampus_*.nii.gz")
               if "labels" not in p.name)


def isic_image(i: int = 0) -> np.ndarray:
    return np.asarray(Image.open(ISIC[i]).convert("RGB"))


def isic_mask(i: int = 0) -> np.ndarray:
    path = ISIC[i].with_name(ISIC[i].stem + "_segmentation.png")
    return (np.asarray(Image.open(path)) > 127).astype(np.uint8)


def hippo_volume(i: int = 0) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(HIPPO[i])
    return np.asarray(img.dataobj), img.affine


def hippo_labels(i: int = 0) -> np.ndarray:
    return np.asarray(nib.load(str(HIPPO[i]).replace(".nii.gz", "_labels.nii.gz")).dataobj)


def dice(pred: np.ndarray, truth: np.ndarray, label: int) -> float:
    a, b = pred == label, truth == label
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


@pytest.fixture
def rgb():
    return isic_image(0)


@pytest.fixture
def volume():
    return hippo_volume(0)


# The suite's slow parts, by module: CI runs everything; `pytest -m "not slow and not bench"`
# is the quick loop while editing (the coding path, formats, CLI, service).
SLOW_MODULES = {"test_train", "test_budget", "test_batch", "test_datasets", "test_readme",
                "test_seed", "test_evaluate"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains networks, starts clusters or servers")
    config.addinivalue_line("markers", "bench: runs a benchmark end to end on fixtures/")


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module.startswith("test_bench_"):
            item.add_marker(pytest.mark.bench)
        elif module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)

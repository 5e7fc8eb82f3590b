"""Where a batch's outputs go, decided before any work starts, as cp and gzip decide it.

- Without a destination, each output lands beside its input (``default(src)``).
- A destination that is an existing folder receives every output under its default name.
- Anything else is one file: it takes exactly one input, and it is never made into a folder.
- An output never replaces an input; an existing output is kept unless ``force`` (an error)
  or ``skip_existing`` (skipped, so a batch can resume).
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import io as sgio
from .errors import InputError, SgcError


@dataclass
class Job:
    src: Path
    dst: Path | None  # None where ``error`` says why there is none
    skip: bool = False  # the output exists and the batch resumes past it
    error: str | None = None  # a per-file refusal; the batch carries on with the others


def plan(sources: list[Path], dest: Path | None, default: Callable[[Path], Path], *,
         force: bool = False, skip_existing: bool = False,
         sidecars: bool = False) -> list[Job]:
    """One job per source.  InputError when the destination cannot take the batch at all.
    ``sidecars``: each output comes with its ``sidecar_path``, which is not replaced without
    ``force`` either."""
    if dest is not None and not dest.is_dir():
        if len(sources) > 1:
            raise InputError(f"{len(sources)} inputs need an existing folder as destination; "
                             f"{dest} is not one")
        if not dest.parent.is_dir():
            raise InputError(f"{dest.parent}: no such folder")
    inputs = {_key(s) for s in sources}
    jobs, taken = [], {}
    for src in sources:
        try:
            name = default(src)
        except SgcError as exc:  # this file cannot be planned; the others can
            jobs.append(Job(src, None, error=str(exc)))
            continue
        dst = name if dest is None else dest / _shared_name(src, name) if dest.is_dir() \
            else dest
        job = Job(src, dst)
        if _key(dst) in inputs:
            job.error = f"{dst}: is an input; not overwriting it"
        elif _key(dst) in taken:
            job.error = f"{dst}: also the output of {taken[_key(dst)]}"
        elif dst.is_dir():
            job.error = f"{dst} is a folder; name a file"
        elif dst.exists() and skip_existing:
            job.skip = True
        elif (there := existing_output(dst, sidecars)) and not force:
            job.error = f"{there}: exists; --force replaces it, --skip-existing keeps it"
        taken.setdefault(_key(dst), src)
        jobs.append(job)
    return jobs


def _is_image_file(path: Path) -> bool:
    """An image or volume file by its type, and not a label map segcodec wrote
    (``NAME.labels.<ext>``): coding one as an image would give labels of labels; nor
    a hidden file."""
    return (path.is_file() and sgio.suffix(path) in sgio.IMAGE_SUFFIXES
            and not stem(path).endswith(".labels") and not is_hidden(path))


def is_hidden(path: Path) -> bool:
    """A hidden file (``.NAME``): in a folder, never an input, as with ``evaluate`` and
    ``train``.  macOS's ``._NAME`` metadata files, which copies to other file systems leave
    beside each file, are such."""
    return path.name.startswith(".")


def holds_inputs(folder: Path) -> bool:
    """Whether a folder holds images, volumes or DICOM files (so it is an input)."""
    return any(_is_image_file(p) or p.is_file() and sgio.is_dicom(p) and not _is_dicomdir(p)
               for p in folder.iterdir())


def _is_dicomdir(path: Path) -> bool:
    """A DICOM medium's index, by the name the standard gives it (PS3.10): it lists the
    series in the folders below; it is not an image of its folder."""
    return path.name.upper() == "DICOMDIR"


def expand(path: Path) -> list[Path]:
    """The inputs a path names: a folder of images/volumes is its files; a DICOM series
    folder is one input; a study folder (nothing to code of its own, one subfolder per
    series) is its series.  Label maps segcodec wrote there are not inputs."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _is_image_file(p))
        if files:
            return files
        series = _series_of(path)
        if series:
            return series
    return [path]


def _series_of(study: Path) -> list[Path]:
    """A study folder's series folders, sorted; none where it holds inputs of its own."""
    if holds_inputs(study):
        return []
    return sorted(p for p in study.iterdir() if p.is_dir() and holds_inputs(p))


def study_names(study: Path) -> dict[Path, Path]:
    """The ``.sgc`` names of a study folder's series: ``series<N>.sgc`` in the study folder,
    N the SeriesNumber (as PACS viewers list them); a series without a number, or sharing
    it with another, keeps its folder's name.  Empty where ``study`` is not a study folder.
    Read once per study and listing (a batch asks for each of its series)."""
    if not study.is_dir():
        return {}
    return _study_names(study, study.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _study_names(study: Path, mtime: int) -> dict[Path, Path]:
    series = _series_of(study)
    if not series:
        return {}
    from .io import dicom  # pydicom only for DICOM studies
    numbers = {p: dicom.series_number(p) for p in series}
    counts = Counter(numbers.values())
    return {p: study / (f"series{n}.sgc" if n is not None and counts[n] == 1
                        else p.name + ".sgc") for p, n in numbers.items()}


def _shared_name(src: Path, name: Path) -> str:
    """An output's name in a destination folder.  A series named by its number carries its
    study's name too (``<study>_series<N>.sgc``), so several studies can share the folder."""
    if src.is_dir() and name.name != src.name + ".sgc":
        return f"{src.parent.name}_{name.name}"
    return name.name


def default_sgc_path(src) -> Path:
    """``NAME.sgc`` beside the input ``NAME.<ext>``; a series of a study folder by its
    series number (``study_names``)."""
    src = Path(src)
    if src.is_dir():  # a series folder: its whole name (UID-named folders hold dots)
        return study_names(src.parent).get(src) or src.with_name(src.name + ".sgc")
    return src.with_name(stem(src) + ".sgc")


def default_labels_path(sgc_path, header) -> Path:
    """``NAME.labels.<ext>`` beside ``NAME.sgc``, in the kind of file the image came from
    (format_spec.md §1.3): labels come back as the input came."""
    sgc_path = Path(sgc_path)
    return sgc_path.with_name(stem(sgc_path) + ".labels"
                              + sgio.label_suffix(header.source, header.ndim))


def labels_destination(dst, sgc_path, header) -> Path:
    """Where ``segment`` and ``send`` write the labels: ``dst``, or where it is None or a
    folder, ``default_labels_path``'s name beside the .sgc or in that folder."""
    default = default_labels_path(sgc_path, header)
    if dst is None:
        return default
    return Path(dst) / default.name if Path(dst).is_dir() else Path(dst)


def sidecar_path(labels_path) -> Path:
    """``NAME.labels.json`` beside ``NAME.labels.<ext>``."""
    labels_path = Path(labels_path)
    return labels_path.with_name(stem(labels_path) + ".json")


def existing_output(dst, sidecar: bool = True) -> Path | None:
    """The first of an output and (``sidecar``) its sidecar that exists already, if any."""
    outputs = [Path(dst), sidecar_path(dst)] if sidecar else [Path(dst)]
    return next((p for p in outputs if p.exists()), None)


def not_the_input(src, dst) -> None:
    if Path(dst).resolve() == Path(src).resolve():
        raise InputError(f"{dst}: is the input; not overwriting it")


def stem(path: Path) -> str:
    """The name without its file type (``x.nii.gz`` -> ``x``)."""
    name = path.name
    ext = sgio.suffix(path)
    return name[:-len(ext)] if ext and name.lower().endswith(ext) else name


def _key(path: Path) -> Path:
    return Path(path).resolve()

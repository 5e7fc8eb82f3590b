"""Where a batch's outputs go, decided before any work starts, as cp and gzip decide it.

- Without a destination, each output lands beside its input (``default(src)``).
- A destination that is an existing folder receives every output under its default name.
- Anything else is one file: it takes exactly one input, and it is never made into a folder.
- An output never replaces an input; an existing output is kept unless ``force`` (an error)
  or ``skip_existing`` (skipped, so a batch can resume).
"""
from __future__ import annotations

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
         force: bool = False, skip_existing: bool = False) -> list[Job]:
    """One job per source.  InputError when the destination cannot take the batch at all."""
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
        dst = name if dest is None else dest / name.name if dest.is_dir() else dest
        job = Job(src, dst)
        if _key(dst) in inputs:
            job.error = f"{dst}: is an input; not overwriting it"
        elif _key(dst) in taken:
            job.error = f"{dst}: also the output of {taken[_key(dst)]}"
        elif dst.is_dir():
            job.error = f"{dst} is a folder; name a file"
        elif dst.exists() and skip_existing:
            job.skip = True
        elif dst.exists() and not force:
            job.error = f"{dst}: exists; --force replaces it, --skip-existing keeps it"
        taken.setdefault(_key(dst), src)
        jobs.append(job)
    return jobs


def default_sgc_path(src) -> Path:
    """``NAME.sgc`` beside the input ``NAME.<ext>``."""
    src = Path(src)
    return src.with_name(stem(src) + ".sgc")


def default_labels_path(sgc_path, header) -> Path:
    """``NAME.labels.<ext>`` beside ``NAME.sgc``, in the kind of file the image came from
    (format_spec.md §1.3): labels come back as the input came."""
    sgc_path = Path(sgc_path)
    return sgc_path.with_name(stem(sgc_path) + ".labels"
                              + sgio.label_suffix(header.source, header.ndim))


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

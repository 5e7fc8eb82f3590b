"""Many files at once: a loop in this process, or a Dask cluster for a cohort.

    from segcodec import batch
    results = batch.encode_many(paths, "out/")                     # here, one after another
    from distributed import Client
    with Client("tcp://scheduler:8786") as client:                 # any Dask cluster
        results = batch.encode_many(paths, "out/", client=client)
    failed = [r for r in results if r.error]

Outputs are planned before any work starts (``segcodec.destinations``): names, refusals and
``skip_existing`` are the same wherever the work runs.  A file that fails gives a ``Result``
with its one-line error, and the batch carries on.  On a cluster:

- workers read the inputs and write the outputs at the paths given, so they need the same
  file system as the client (as the nodes of a SLURM or PBS cluster have);
- each worker loads the models a batch needs once, when it joins (``cluster.ModelPlugin``),
  never once
  per file; the client's ``SEGCODEC_MODEL_PATH`` travels with the plugin;
- a worker that dies mid-file has its files run again elsewhere (Dask reschedules the tasks of
  a lost worker); writes are atomic, so a killed write leaves no partial file, and the
  hidden temporary it leaves is deleted when the batch ends.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import destinations, modelfiles, read_header
from .destinations import expand, holds_inputs, is_hidden  # re-exported: a batch's inputs
from . import io as sgio
from .errors import SgcError, os_error

__all__ = ["Result", "encode_many", "segment_many", "expand", "holds_inputs", "is_hidden"]

MAX_FILES_PER_TASK = 16


@dataclass
class Result:
    src: Path
    dst: Path | None
    error: str | None = None
    skipped: bool = False
    bytes: int | None = None  # the output's size
    bpp: float | None = None  # encode: whole-file bits per input pixel
    seconds: float = 0.0
    report: str | None = None  # remote segment: bytes each way and each step's time


def encode_many(paths, dest=None, *, model=None, geometry: bool = True,
                metadata: dict | None = None, force: bool = False,
                skip_existing: bool = False, volume: int | None = None,
                kind: str | None = None, client=None, progress=None) -> list[Result]:
    """``encode_file`` for every path (files or DICOM series folders) into ``dest``: an
    existing folder, one file for one path, or None for beside each input.  One ``Result``
    per path, in their order; ``progress(result)`` is called as each one finishes."""
    jobs = destinations.plan([Path(p) for p in paths], _path(dest),
                             destinations.default_sgc_path, force=force,
                             skip_existing=skip_existing)
    work = functools.partial(encode_one, model=model, geometry=geometry, metadata=metadata,
                             force=force, volume=volume, kind=kind)
    return run(jobs, work, client=client, models=[model], progress=progress)


def segment_many(paths, dest=None, *, device: str = "auto", remote: str | None = None,
                 token: str | None = None, force: bool = False, skip_existing: bool = False,
                 overlay=None, source=None, client=None, progress=None) -> list[Result]:
    """``segment_file`` (or, with ``remote``, a server's segmentation) for every ``.sgc``
    path into ``dest``, as ``encode_many`` places its outputs.  ``overlay`` and ``source`` are
    ``segment_file``'s, for one local file."""
    jobs = destinations.plan([Path(p) for p in paths], _path(dest), labels_path,
                             force=force, skip_existing=skip_existing, sidecars=True)
    if remote:
        work = functools.partial(segment_remote_one, url=remote, token=token)
        models = []
    else:
        work = functools.partial(segment_one, device=device, overlay=overlay, source=source)
        models = sorted({model_id(job.src) for job in jobs if not (job.error or job.skip)})
    return run(jobs, work, client=client, models=models, progress=progress,
               outputs=lambda dst: (dst, destinations.sidecar_path(dst)))


def _path(dest):
    return None if dest is None else Path(dest)


def labels_path(src: Path) -> Path:
    """Where a ``.sgc`` file's labels go by default (its header says what the image was)."""
    return destinations.default_labels_path(src, read_header(src))


def model_id(src: Path) -> str:
    """The hex id of the model a ``.sgc`` file names."""
    return read_header(src).model_id.hex()


def encode_one(job: destinations.Job, **options) -> Result:
    from . import api
    t0 = time.perf_counter()
    out = api.encode_file(job.src, job.dst, **options)
    size = out.stat().st_size
    pixels = math.prod(read_header(out).shape)
    return Result(job.src, out, bytes=size, bpp=size * 8 / pixels,
                  seconds=time.perf_counter() - t0)


def segment_one(job: destinations.Job, device: str = "auto", overlay=None,
                source=None) -> Result:
    from . import api
    t0 = time.perf_counter()
    out = api.segment_file(job.src, job.dst, device=device, overlay=overlay, source=source)
    return Result(job.src, out, bytes=out.stat().st_size, seconds=time.perf_counter() - t0)


def segment_remote_one(job: destinations.Job, url: str, token: str | None = None) -> Result:
    from . import remote
    t0 = time.perf_counter()
    out, answer, steps = remote.segment_file(job.src, job.dst, url, token)
    return Result(job.src, out, bytes=out.stat().st_size, seconds=time.perf_counter() - t0,
                  report=remote.report(str(job.src), url, answer, steps))


def _guarded(job: destinations.Job, work) -> Result:
    """``work(job)``, its user errors as a failed ``Result`` (they would fail again anywhere,
    so they are not retried); anything else propagates, for Dask to retry."""
    if job.skip:
        return Result(job.src, job.dst, skipped=True)
    if job.error:
        return Result(job.src, job.dst, error=job.error)
    try:
        return work(job)
    except SgcError as exc:
        return Result(job.src, job.dst, error=str(exc))
    except OSError as exc:
        return Result(job.src, job.dst, error=os_error(exc, job.src))


def _guarded_all(jobs: list[destinations.Job], work) -> list[Result]:
    return [_guarded(job, work) for job in jobs]


def run(jobs: list[destinations.Job], work, *, client=None, models=(),
        progress=None, outputs=lambda dst: (dst,)) -> list[Result]:
    """``Result``s of ``work`` over ``jobs``, in the jobs' order: here, or on ``client``'s
    cluster after its workers have loaded ``models`` (names, hex ids, or None for the
    defaults).  ``progress(result)`` is called as each one finishes.  Skipped and refused
    jobs never reach a worker.  ``outputs(dst)``: the files a job writes, whose temporaries
    a killed worker may have left."""
    done: list[Result | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        if client is None or job.skip or job.error:
            done[i] = _guarded(job, work)
            if progress:
                progress(done[i])
        else:
            todo.append(i)
    if todo:
        from distributed import as_completed

        from .cluster import ModelPlugin
        # Workers may run in other folders: they get absolute paths, results the caller's.
        model_path = os.pathsep.join(str(Path(d).absolute()) for d in os.environ.get(
            modelfiles.PATH_ENV, "").split(os.pathsep) if d) or None
        client.register_plugin(ModelPlugin(list(models), model_path))
        # A few files per task: Dask's per-task cost stays small beside a 2D file's.
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = max(1, min(MAX_FILES_PER_TASK, len(todo) // (4 * workers)))
        groups = [todo[k:k + size] for k in range(0, len(todo), size)]
        tasks = [[dataclasses.replace(jobs[i], src=jobs[i].src.absolute(),
                                      dst=jobs[i].dst.absolute()) for i in g] for g in groups]
        futures = client.map(_guarded_all, tasks, work=work, pure=False, retries=2)
        where = {f.key: g for f, g in zip(futures, groups)}
        for future in as_completed(futures):
            group = where[future.key]
            try:
                results = future.result()
            except Exception as exc:  # a worker lost too often (KilledWorker), or a bug
                results = [Result(jobs[i].src, jobs[i].dst, error=f"{jobs[i].src}: "
                                  f"{type(exc).__name__}: {exc}") for i in group]
            for i, result in zip(group, results):
                done[i] = dataclasses.replace(result, src=jobs[i].src,
                                              dst=jobs[i].dst if result.dst else None)
                if progress:
                    progress(done[i])
        sgio.remove_temporaries(path for i in todo for path in outputs(jobs[i].dst))
    return done

"""Dask for cohorts: a worker plugin that loads models once, and a client for any cluster.

``segcodec.batch`` runs its files through these when given a client; the CLI's ``--scheduler``
and ``--workers`` make one with ``connect``.  Needs the ``cluster`` extra (dask[distributed]).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from distributed import Client, LocalCluster, WorkerPlugin

from .errors import InputError, SgcError

__all__ = ["connect", "THREADS_PER_WORKER"]

THREADS_PER_WORKER = 1  # torch threads in a worker process: the cluster spreads the work
CONNECT_TIMEOUT = "20s"


class ModelPlugin(WorkerPlugin):
    """The models a batch needs, loaded once in each worker as it joins (and in workers that
    join later, or replace a lost one).  Registered under one name, so the next batch's
    replaces it."""
    name = "segcodec-models"

    def __init__(self, models: list[str | None], model_path: str | None = None):
        self.models, self.model_path = models, model_path  # None: the defaults, 2D and 3D
        self.loaded: list[str] = []

    def setup(self, worker) -> None:
        from . import backend, zoo
        backend.set_threads(THREADS_PER_WORKER)  # torch's too, where it runs (no torch to encode)
        if self.model_path is not None and os.environ.get(zoo.PATH_ENV) != self.model_path:
            os.environ[zoo.PATH_ENV] = self.model_path
            zoo.reload()
        for name in self.models:
            try:
                found = [zoo.find(name)] if name else [zoo.default_for(2), zoo.default_for(3)]
            except SgcError:
                continue  # each file that needs it fails with the reason, one by one
            self.loaded += [m.name for m in found]


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None):
    """A client of the cluster at ``scheduler`` (``tcp://host:8786``, or a scheduler file as
    dask-jobqueue and ``dask scheduler --scheduler-file`` write), or of a LocalCluster of
    ``workers`` processes on this machine, which is closed afterwards."""
    if scheduler:
        if scheduler.endswith(".json") and not Path(scheduler).is_file():
            raise InputError(f"{scheduler}: no such scheduler file")
        try:
            client = Client(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT) \
                if Path(scheduler).is_file() else Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc
        with client:
            yield client
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        # Our own workers, their work done: one slow to exit (torch, a busy machine) is
        # killed, as it should be, without two warnings a batch.
        nanny = logging.getLogger("distributed.nanny")
        level = nanny.level
        nanny.setLevel(logging.ERROR)
        try:
            cluster.close()
        finally:
            nanny.setLevel(level)

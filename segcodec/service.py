"""The segmentation service: POST a ``.sgc`` file, get its label map back.

    segcodec serve --host 127.0.0.1 --port 8080 [--device auto|cpu|cuda|cuda:N] [--token-file F]

``POST /v1/segment``  body: a ``.sgc`` file.  Answer: the label map, as a label stream
    (``application/x-segcodec-labels``, format_spec.md §7: lossless, geometry inside) unless the
    Accept header asks for ``application/x-nifti`` (a .nii.gz), ``image/png`` (2D, indexed:
    label values, in the label colours) or ``application/x-npy``.  Headers
    ``X-Segcodec-Shape``, ``-Classes``, ``-Model``,
    ``-Affine`` (JSON, when the file has geometry) and ``Server-Timing`` come with every format.
``GET /v1/models``  the models this server decodes: id, name, task, labels.
``GET /healthz``    liveness for load balancers; never needs the token.

Errors are JSON ``{"error": kind, "message": one line}``: 400 malformed or corrupted file,
401 missing or wrong bearer token (when a token is configured), 406 no acceptable format,
413 body over ``max_body`` (from Content-Length, and counted while the body streams in),
422 unknown model id (named), 503 ``max_queue`` requests already in flight (with Retry-After).

Replicas: a server keeps no state between requests; every replica loads the same models at
start-up and answers any request alone.  Run ``segcodec serve`` once per host or port and put
any HTTP load balancer in front (nginx ``upstream`` with ``proxy_pass``, HAProxy, a cloud LB),
round-robin, no sticky sessions, health check ``GET /healthz``; give every replica the same
``--token-file`` and models, and let the balancer's body limit be at least ``--max-body``.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import __version__, api, labelcodec, zoo
from . import io as sgio
from .errors import InputError, SgcError, SgcFormatError, UnknownModelError

__all__ = ["LABELS", "NIFTI", "PNG", "NPY", "MAX_BODY", "ServiceError", "create_app",
           "uvicorn_options"]

LABELS = labelcodec.MEDIA_TYPE
NIFTI = "application/x-nifti"
PNG = "image/png"
NPY = "application/x-npy"
_SUFFIX = {NIFTI: ".nii.gz", PNG: ".png", NPY: ".npy"}
MAX_BODY = 1 << 20  # .sgc files are bytes to kilobytes; a megabyte is generous
MAX_HEADER_BYTES = 16 << 10  # a client's headers are a few hundred bytes
log = logging.getLogger("segcodec.service")


class ServiceError(Exception):
    """An HTTP error answer: status, a short kind and a one-line message."""

    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def _answer(exc: ServiceError) -> JSONResponse:
    return JSONResponse({"error": exc.kind, "message": exc.message}, exc.status, exc.headers)


def _negotiate(accept: str | None) -> str | None:
    """The media type to answer in, from an Accept header (q-values honoured), or None."""
    offers = []
    for i, part in enumerate((accept or "*/*").split(",")):
        kind, *params = [p.strip().lower() for p in part.split(";")]
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            offers.append((-q, i, kind))
    for _, _, kind in sorted(offers):
        if kind in (LABELS, NIFTI, PNG, NPY):
            return kind
        if kind in ("*/*", "application/*", ""):
            return LABELS
        if kind == "image/*":
            return PNG
    return None


class _Batcher:
    """One thread runs the networks: files that wait together go through as one batch.

    A thread, not an asyncio task, so it serves any event loop (test clients start one per
    request).  Nothing waits for a batch to fill: a batch is whatever queued while the last
    one ran, so a lone request is never delayed.
    """

    _STOP = None  # queued by close(): the thread ends after the batches before it

    def __init__(self, device: torch.device, max_batch: int):
        self.device, self.max_batch = device, max_batch
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="segcodec-infer", daemon=True)
        self.thread.start()

    def submit(self, decoded: api.Decoded) -> Future:
        future: Future = Future()
        self.queue.put((decoded, future))
        return future

    def close(self, timeout: float | None = None) -> None:
        self.queue.put(self._STOP)
        self.thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self.queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stopping = self._STOP in batch
            batch = [item for item in batch if item is not self._STOP]
            by_model: dict[bytes, list] = {}
            for decoded, future in batch:
                if future.set_running_or_notify_cancel():  # skip requests that went away
                    by_model.setdefault(decoded.model.model_id, []).append((decoded, future))
            for items in by_model.values():
                try:
                    results = api.labels_of([d for d, _ in items], self.device)
                except Exception as exc:  # handed to the requests, which answer 500
                    for _, future in items:
                        future.set_exception(exc)
                    continue
                for (_, future), labels in zip(items, results):
                    future.set_result(labels)


def _rss() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _render(kind: str, labels: np.ndarray, decoded: api.Decoded) -> bytes:
    """Labels -> response body in the negotiated format, geometry included where it fits."""
    header, classes = decoded.header, len(decoded.model.labels)
    if kind == LABELS:
        return labelcodec.encode(labels, classes, affine=header.affine, source=header.source)
    with tempfile.TemporaryDirectory(prefix="segcodec-") as tmp:
        colours = [label["colour"] for label in api.label_sidecar(header.model_id)["labels"]]
        path = sgio.write_labels(Path(tmp) / ("labels" + _SUFFIX[kind]), labels, header.affine,
                                 colours)
        return path.read_bytes()


class _Server:
    """What a running service holds (its models on the device, the inference thread, the I/O
    executor, the admission slots, its limits) and how it answers a request."""

    def __init__(self, device, token, max_body, max_queue, workers, max_batch, warm,
                 body_timeout, max_output_voxels):
        dev = api.resolve_device(device)  # InputError for cuda without a GPU: fail at start-up
        self.models = zoo.installed()
        for m in self.models.values():
            m.net_on(dev)
        if warm:  # compile the coders' kernels and touch every network before the first request
            labelcodec.decode(labelcodec.encode(np.zeros((4, 4, 4), np.uint8), 2))
            for m in self.models.values():
                with torch.no_grad():
                    m.net_on(dev).decode_logits(torch.zeros((1, *m.latent_shape), device=dev))
        if max_batch is None:
            max_batch = 8 if dev.type == "cuda" else 1
        self.executor = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                           thread_name_prefix="segcodec-io")
        self.batcher = _Batcher(dev, max(1, max_batch))
        self.admission = threading.BoundedSemaphore(max_queue)  # in flight, queued ones too
        self.in_flight, self._counting = 0, threading.Lock()  # for /healthz
        self.secret = token.encode() if token else None
        self.max_body, self.max_queue, self.body_timeout = max_body, max_queue, body_timeout
        self.max_output_voxels = max_output_voxels
        self.config = {"device": str(dev),  # "cuda:1" stays on GPU 1
                       "max_body": max_body, "max_queue": max_queue, "max_batch": max_batch,
                       "token": bool(token), "body_timeout": body_timeout,
                       "max_output_voxels": max_output_voxels}

    async def close(self) -> None:
        """Requests still queued get their answers first; then the threads end."""
        await asyncio.to_thread(self.batcher.close, 30)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict:
        return {"status": "ok", "models": len(self.models), "device": self.config["device"],
                "in_flight": self.in_flight, "rss_bytes": _rss()}

    def authorise(self, request: Request) -> None:
        if self.secret is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self.secret):
            raise ServiceError(401, "unauthorized",
                               "missing or wrong bearer token (send Authorization: Bearer ...)",
                               {"WWW-Authenticate": "Bearer"})

    async def read_body(self, request: Request) -> bytes:
        limit = self.max_body
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ServiceError(400, "bad_request", f"bad Content-Length {length[:40]!r}")
            if int(length) > limit:
                raise ServiceError(413, "too_large", f"body of {int(length)} bytes is over the "
                                                     f"limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, "too_large", f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def decode_within_limit(self, body: bytes) -> api.Decoded:
        header = api.container.read(body)[0]  # the declared size, before the work
        voxels = int(np.prod(header.shape, dtype=np.int64))
        if voxels > self.max_output_voxels:
            raise ServiceError(413, "too_large", f"the file declares {voxels} voxels, over "
                               f"this server's limit of {self.max_output_voxels}")
        return api.decode(body)

    async def segment(self, request: Request) -> Response:
        """POST /v1/segment: the body read within its time before it takes an admission
        slot, so slow uploads cannot hold them."""
        self.authorise(request)
        kind = _negotiate(request.headers.get("accept"))
        if kind is None:
            raise ServiceError(406, "not_acceptable", f"cannot answer in "
                               f"{request.headers.get('accept')[:80]!r}; accept one of "
                               f"{LABELS}, {NIFTI}, {PNG}, {NPY}")
        try:
            body = await asyncio.wait_for(self.read_body(request), self.body_timeout)
        except asyncio.TimeoutError:
            return _answer(ServiceError(408, "timeout", f"the body took over "
                                        f"{self.body_timeout:g} s to arrive"))
        except ClientDisconnect:  # gone mid-upload: nobody to answer, nothing to log
            return Response(status_code=400)
        if not self.admission.acquire(blocking=False):
            return _answer(ServiceError(503, "busy", f"server busy: {self.max_queue} requests "
                                        "in flight; retry later", {"Retry-After": "1"}))
        self._count(+1)
        try:
            return await self._labels(body, kind)
        except ServiceError as exc:
            return _answer(exc)
        except SgcFormatError as exc:
            return _answer(ServiceError(400, "bad_sgc", str(exc)))
        except UnknownModelError as exc:
            return _answer(ServiceError(422, "unknown_model", str(exc)))
        except (InputError, SgcError) as exc:
            return _answer(ServiceError(400, "bad_request", str(exc)))
        except Exception as exc:  # a bug: answer, log, and keep serving
            log.exception("segment failed")
            return _answer(ServiceError(500, "internal", f"internal error "
                                        f"({type(exc).__name__}); see the server log"))
        finally:
            self._count(-1)
            self.admission.release()

    def _count(self, step: int) -> None:
        with self._counting:
            self.in_flight += step

    async def _labels(self, body: bytes, kind: str) -> Response:
        """An admitted file's labels, in ``kind``, with the headers every answer has."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        # Off the event loop, as all parsing is: a hostile file costs its own request time,
        # never /healthz's or another request's.
        decoded = await loop.run_in_executor(self.executor, self.decode_within_limit, body)
        header = decoded.header
        if kind == PNG and header.ndim != 2:
            raise ServiceError(406, "not_acceptable", "PNG holds 2D labels; this file is "
                               "3D: accept application/x-nifti or application/x-npy")
        t1 = time.perf_counter()
        labels = await asyncio.wrap_future(self.batcher.submit(decoded))
        t2 = time.perf_counter()
        content = await loop.run_in_executor(self.executor, _render, kind, labels, decoded)
        t3 = time.perf_counter()
        headers = {"X-Segcodec-Shape": ",".join(map(str, header.shape)),
                   "X-Segcodec-Classes": str(len(decoded.model.labels)),
                   "X-Segcodec-Model": header.model_id.hex(),
                   "Server-Timing": f"decode;dur={1e3 * (t1 - t0):.3f}, "
                                    f"segment;dur={1e3 * (t2 - t1):.3f}, "
                                    f"encode;dur={1e3 * (t3 - t2):.3f}"}
        if header.affine is not None:
            headers["X-Segcodec-Affine"] = json.dumps(header.affine.tolist(),
                                                      separators=(",", ":"))
        return Response(content, media_type=kind, headers=headers)


def create_app(device: str = "auto", token: str | None = None, max_body: int = MAX_BODY,
               max_queue: int = 64, workers: int | None = None, max_batch: int | None = None,
               warm: bool = True, body_timeout: float = 10.0,
               max_output_voxels: int = 1 << 24) -> FastAPI:
    """The ASGI application.  Models load (and move to ``device``) here, once.

    ``max_queue`` bounds the requests in flight (more are answered 503); ``workers`` threads
    parse files and code label maps; ``max_batch`` files share one network call (default 8
    on a GPU, 1 on the CPU, where batched convolutions may round differently from
    ``segcodec.segment``'s).  A request's body is read, within ``body_timeout`` seconds
    (408 beyond), before it takes one of the ``max_queue`` slots, so slow uploads cannot
    hold them.  A file whose label map would exceed ``max_output_voxels`` (256³ by default)
    is answered 413 before g and s run: a 170-byte upload may declare a 406³ image.
    """
    server = _Server(device, token, max_body, max_queue, workers, max_batch, warm,
                     body_timeout, max_output_voxels)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await server.close()

    app = FastAPI(title="segcodec", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.add_middleware(_HeaderLimit, limit=MAX_HEADER_BYTES)
    app.state.batcher, app.state.executor = server.batcher, server.executor
    app.state.config = server.config

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return _answer(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _answer(ServiceError(exc.status_code, "http", str(exc.detail)))

    @app.get("/healthz")
    async def healthz():
        return server.health()

    @app.get("/v1/models")
    async def list_models(request: Request):
        server.authorise(request)
        keep = ("id", "name", "task", "ndim", "input_channels", "labels", "default",
                "latent_shape")
        return {"models": [{k: d[k] for k in keep} for d in api.list_models()]}

    @app.post("/v1/segment")
    async def segment(request: Request):
        return await server.segment(request)

    return app


class _HeaderLimit:
    """431 for a request whose headers hold more than ``limit`` bytes (100 KB, or 10,000
    lines, were answered 200), before the app sees it.  Headers that arrive in several reads
    are bounded sooner, by h11 (``uvicorn_options``)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + 4 for k, v in scope["headers"])  # ": " and CRLF
            if size > self.limit:
                await _answer(ServiceError(431, "headers_too_large", f"request headers of "
                                           f"{size} bytes, over {self.limit}"))(scope, receive,
                                                                                 send)
                return
        await self.app(scope, receive, send)


# What uvicorn leaves open: a deadline for a request's line and headers (a client that sends
# part of them and nothing more held its connection, and a slot of --max-connections, for as
# long as it liked: 256 such sockets took the service down), the size of the headers, and
# what a connection over the limit does: uvicorn answers its request 503 while idle ones
# hold every slot, so a client that reopens its idle sockets as they are closed kept the
# service down.  As nginx reuses idle connections, a new connection over the limit closes
# the one that has waited longest without a request with the app.


def uvicorn_options(header_timeout: float = 10.0, max_header_bytes: int = MAX_HEADER_BYTES
                    ) -> dict:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that close a connection
    whose request line and headers are not complete within ``header_timeout`` seconds (from
    its opening, or from the end of its previous response), and refuse headers of more than
    ``max_header_bytes`` (h11's limit, with a 400)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        # Armed whenever no request is with the app: from the connection's opening, and from
        # each answer (given before its body was read, too: a 401 or a 406), until the next
        # request's line and headers are in.
        _deadline = None

        _waiting_since = None
        _answered = 0  # responses completed on this connection

        def connection_made(self, transport):
            super().connection_made(transport)
            self._watch()
            if self.limit_concurrency is not None:
                self._make_room(self.limit_concurrency)

        def _make_room(self, limit: int):
            """Drop the connections waiting longest while ``limit`` or more are open (this
            one counted, as uvicorn counts every connection against the limit at its
            request).  Waiting: no request with the app, which includes one whose headers
            are still coming in, so a flood of new connections may drop slow clients too.
            Those never answered go first: a client's kept-alive connections outlast a flood
            of sockets that send half a request."""
            idle = sorted((p for p in self.connections if p is not self
                           and getattr(p, "_waiting_since", None) is not None
                           and not p.transport.is_closing()),
                          key=lambda p: (p._answered, p._waiting_since))
            for p in idle[:max(0, len(self.connections) - limit + 1)]:
                p._disarm()
                p.transport.abort()  # gone before the next request is counted

        def handle_events(self):
            super().handle_events()
            self._watch()

        def on_response_complete(self):
            super().on_response_complete()
            self._answered += 1
            self._watch()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _watch(self):
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(header_timeout, self._late)
                self._waiting_since = self.loop.time()
            elif not waiting:
                self._disarm()

        def _disarm(self):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._waiting_since = None

        def _late(self):
            self._deadline = self._waiting_since = None
            if not self.transport.is_closing():
                self.transport.close()

    return {"http": HeaderDeadline, "h11_max_incomplete_event_size": max_header_bytes}

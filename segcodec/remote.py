"""Client of the segmentation service (``segcodec serve``).

    >>> from segcodec.remote import Client
    >>> with Client("http://127.0.0.1:8080") as client:
    ...     labels = client.segment(data)          # .sgc bytes -> uint8 label map

Answers come as label streams (format_spec.md §7), which carry the file's geometry.  A busy
server (503) is retried with exponential backoff; everything else fails at once with an
``SgcError``: ``ServerUnreachableError`` when no server answers, ``RemoteFormatError`` (also an
``SgcFormatError``) for a file the server calls malformed, ``RemoteUnknownModelError`` (also an
``UnknownModelError``) for a model it does not have, ``RemoteError`` for the rest.
"""
from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np

from . import container, labelcodec
from .errors import SgcError, SgcFormatError, UnknownModelError, naming

__all__ = ["RemoteError", "ServerUnreachableError", "RemoteFormatError",
           "RemoteUnknownModelError", "RemoteLabels", "Client", "report", "segment_file",
           "send_file", "ANSWER_FORMS", "preferred_answer"]


class RemoteError(SgcError):
    """The server answered with an error; ``status`` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerUnreachableError(RemoteError):
    """No connection, or no answer within the timeout."""


class RemoteFormatError(RemoteError, SgcFormatError):
    """The server found the .sgc file malformed or corrupted (400)."""


class RemoteUnknownModelError(RemoteError, UnknownModelError):
    """The server has no model with the file's id (422)."""


@dataclass
class RemoteLabels:
    """A label map from the server, with what it cost."""
    labels: np.ndarray
    classes: int
    affine: np.ndarray | None
    source: str
    sent: int  # request body bytes
    received: int  # response body bytes
    seconds: float  # the request, from sending to the last byte received (retries included)
    decode_seconds: float  # decoding the answer here
    server_ms: dict = field(default_factory=dict)  # the server's own steps, Server-Timing


# The forms a server's labels come in: what ``fetch`` asks for and reads back.
LABELS, PNG, NIFTI = labelcodec.MEDIA_TYPE, "image/png", "application/x-nifti"
ANSWER_FORMS = (LABELS, PNG, NIFTI)


def preferred_answer(ndim: int) -> str:
    """The label stream where numba's label kernels are installed (the smallest answer);
    without them PNG or NIfTI, whose decoders are compiled: numpy's kernels take seconds for
    a large map (``python -m bench startup``)."""
    from . import labelkernels
    if labelkernels.fastest is labelkernels.KERNELS.get("numba"):
        return LABELS
    return PNG if ndim == 2 else NIFTI


def _read_answer(kind: str, response: Answer, header):
    """(labels, classes, affine, source) of a server's answer to the file with ``header``;
    where the answer is not a label stream, the affine from the exact ``X-Segcodec-Affine``
    header and the source from the file's."""
    if kind == LABELS:
        decoded = labelcodec.decode(response.content)
        return decoded.labels, decoded.classes, decoded.affine, decoded.source
    import io
    classes = int(response.headers["x-segcodec-classes"])
    given = response.headers.get("x-segcodec-affine")
    affine = None if given is None else np.asarray(json.loads(given), dtype=np.float64)
    if kind == PNG:
        from PIL import Image
        with Image.open(io.BytesIO(response.content)) as image:
            if image.mode != "P":
                raise ValueError(f"a PNG of mode {image.mode}, not indexed labels")
            labels = np.asarray(image, dtype=np.uint8)
    else:
        import gzip

        import nibabel as nib
        image = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
        labels = np.asarray(image.dataobj, dtype=np.uint8)
    return labels, classes, affine, "array" if header is None else header.source


def _server_timing(value: str) -> dict:
    out = {}
    for part in value.split(","):
        name, *params = [p.strip() for p in part.split(";")]
        for p in params:
            if p.startswith("dur="):
                try:
                    out[name] = float(p[4:])
                except ValueError:
                    pass
    return out


@dataclass
class Answer:
    """A server's answer, its body read whole; header names are case-insensitive."""
    status_code: int
    reason_phrase: str
    headers: http.client.HTTPMessage
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class Client:
    """A connection to one segcodec server (or a load balancer in front of several), kept
    alive between requests.

    The standard library's ``http.client`` speaks HTTP/1.1 here: the clinic's install has no
    HTTP package to carry (issue 24's 150 MB).  It goes to the server directly (proxy
    variables are not read) and checks https against the system's certificate store.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 4, backoff: float = 0.25,
                 max_response_bytes: int = 128 << 20):
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"a server URL starts with http:// or https://, not {url!r}")
        self.url, self.timeout = url.rstrip("/"), timeout
        self.retries, self.backoff = retries, backoff
        # A server (or whatever answers at its address) cannot make us buffer without end.
        self.max_response_bytes = max_response_bytes
        parts = urlsplit(self.url)
        try:
            parts.port
        except ValueError as exc:
            raise RemoteError(f"{url!r}: {exc}") from None
        if not parts.hostname:
            raise RemoteError(f"{url!r} names no host")
        self._parts = parts
        self._base = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=")
        self._headers = {"User-Agent": "segcodec"}
        if token:
            if not token.isprintable() or not token.isascii():
                raise RemoteError("a bearer token is one line of printable ASCII")
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """The kept-alive connection and True, or a new one (connected within at most 10 s,
        then ``timeout`` for each read) and False."""
        if self._conn is not None and self._conn.sock is not None:
            return self._conn, True
        self.close()
        https = self._parts.scheme == "https"
        # What a request on a connection the server has closed meanwhile ends in.
        self._stale = (http.client.RemoteDisconnected, ConnectionError)
        # The port always: http.client would read "::1" as host ":" and port 1.
        host, port = self._parts.hostname, self._parts.port or (443 if https else 80)
        connect = min(self.timeout, 10.0)
        if https:
            import ssl
            conn = http.client.HTTPSConnection(host, port, timeout=connect,
                                               context=ssl.create_default_context())
            self._stale += (ssl.SSLEOFError,)  # writing to a closed TLS connection
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect)
        conn.connect()
        conn.sock.settimeout(self.timeout)
        self._conn = conn
        return conn, False

    def _request(self, method: str, path: str, **kwargs) -> Answer:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = self._bounded(method, path, **kwargs)
            except TimeoutError as exc:
                raise ServerUnreachableError(f"{self.url}: no answer within {self.timeout:g} s"
                                             ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise ServerUnreachableError(f"cannot reach a segcodec server at {self.url} "
                                             f"({type(exc).__name__}: "
                                             f"{' '.join(str(exc).split())})") from exc
            if response.status_code != 503 or attempt == self.retries:
                break
            time.sleep(delay)  # busy: back off, doubling each time
            delay *= 2
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _bounded(self, method: str, path: str, content: bytes | None = None,
                 headers: dict | None = None) -> Answer:
        """The answer, its body read up to ``max_response_bytes`` (RemoteError beyond).  A
        kept-alive connection the server has closed meanwhile is opened again, once."""
        headers = {**self._headers, **(headers or {})}
        while True:
            conn, reused = self._connection()
            try:
                conn.request(method, self._base + path, body=content, headers=headers)
                response = conn.getresponse()
            except self._stale:
                self.close()
                if reused:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            break
        try:
            body, size = [], 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise RemoteError(f"{self.url}: answer larger than "
                                      f"{self.max_response_bytes} bytes; not reading it")
                body.append(chunk)
        except BaseException:
            self.close()  # the rest of the body would be read as the next answer
            raise
        if response.length:  # fewer bytes than Content-Length said: read() does not raise
            self.close()
            raise ServerUnreachableError(f"{self.url}: the connection closed {response.length} "
                                         f"bytes before the end of the answer")
        if response.headers.get("content-encoding", "identity") != "identity":
            raise RemoteError(f"{self.url}: answer in content encoding "
                              f"{response.headers['content-encoding']}, which was not asked for")
        return Answer(response.status, response.reason, response.headers, b"".join(body))

    def _error(self, response: Answer) -> RemoteError:
        try:
            message = str(response.json()["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        status = response.status_code
        cls = {400: RemoteFormatError, 422: RemoteUnknownModelError}.get(status, RemoteError)
        if status == 503:
            message += f" (gave up after {self.retries} retries)"
        return cls(f"server {self.url} answered {status}: {' '.join(message.split())}", status)

    def fetch(self, data, accept: str | None = None) -> RemoteLabels:
        """Upload a .sgc file (its bytes or its path); its labels with classes, geometry,
        sizes and timings.  ``accept``: the form they travel in (``ANSWER_FORMS``); by
        default the label stream where numba decodes it, else PNG (2D) or NIfTI (3D), which
        Pillow's and zlib's compiled decoders read faster than numpy's label kernels."""
        data, _ = container.sgc_bytes(data)
        try:
            header = container.read(data)[0]
        except SgcFormatError:  # the server says what is wrong with it
            header = None
        accept = accept or preferred_answer(2 if header is None else header.ndim)
        if accept not in ANSWER_FORMS:
            raise RemoteError(f"labels travel as one of {', '.join(ANSWER_FORMS)}, not {accept}")
        t0 = time.perf_counter()
        response = self._request("POST", "/v1/segment", content=data,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Accept": accept})
        seconds = time.perf_counter() - t0
        kind = response.headers.get("content-type", "").split(";")[0]
        if kind != accept:
            raise RemoteError(f"server {self.url} answered {kind or 'no content type'}, not "
                              f"{accept}", response.status_code)
        try:
            labels, classes, affine, source = _read_answer(kind, response, header)
        except (SgcError, ValueError, OSError, KeyError, EOFError) as exc:
            raise RemoteError(f"server {self.url} sent bad labels ({kind}): "
                              f"{' '.join(str(exc).split())[:200]}") from exc
        return RemoteLabels(labels, classes, affine, source,
                            len(data), len(response.content), seconds,
                            time.perf_counter() - t0 - seconds,
                            _server_timing(response.headers.get("server-timing", "")))

    def segment(self, data) -> np.ndarray:
        """``.sgc`` bytes (or path) -> uint8 label map, as ``segcodec.segment`` gives locally."""
        return self.fetch(data).labels

    def models(self) -> list[dict]:
        return self._request("GET", "/v1/models").json()["models"]

    def health(self) -> dict:
        return self._request("GET", "/healthz").json()


def report(name: str, url: str, answer: RemoteLabels, steps: list[tuple[str, float]]) -> str:
    """Two lines for a round trip: the bytes each way, each step's time and the server's."""
    server = ", ".join(f"{k} {v:.1f} ms" for k, v in answer.server_ms.items())
    return (f"{name} -> {url}: sent {answer.sent} bytes, received {answer.received} bytes\n  "
            + " | ".join(f"{k} {1e3 * v:.1f} ms" for k, v in steps)
            + (f"  (server: {server})" if server else ""))


def segment_file(src, dst, url: str, token: str | None = None, *,
                 timeout: float = 60.0) -> tuple[Path, RemoteLabels, list[tuple[str, float]]]:
    """``segcodec segment SRC --remote URL``: upload a .sgc file, write its labels.

    ``dst`` as for local ``segment_file``: a file, a folder, or None for NAME.labels.<kind>
    beside the input.  Returns the label file, the server's answer and each step's seconds.
    """
    from . import api, destinations
    from . import read_header
    src = Path(src)
    t0 = time.perf_counter()
    data = container.read_file(src)
    with naming(src):
        header = read_header(data)  # a bad file fails here, before any upload
        dst = destinations.labels_destination(dst, src, header)
        api.check_destination(dst, header)  # and a bad destination
        t1 = time.perf_counter()
        with Client(url, token, timeout=timeout) as client:
            result = client.fetch(data)
    t2 = time.perf_counter()
    out = api.write_label_file(dst, result.labels, header, affine=result.affine)
    t3 = time.perf_counter()
    return out, result, [("read", t1 - t0), ("request", result.seconds),
                         ("decode labels", result.decode_seconds), ("write", t3 - t2),
                         ("total", t3 - t0)]


def send_file(src, dst, url: str, token: str | None = None, *, model=None,
              geometry: bool = True, timeout: float = 60.0, volume: int | None = None,
              force: bool = False) -> tuple[Path, RemoteLabels, list[tuple[str, float]]]:
    """``segcodec send``: read an image, encode it here, upload the .sgc, write the labels
    over the input as it is (its shape, its geometry).

    ``dst`` as for ``segment_file``; labels (or their sidecar) that exist already are
    replaced only with ``force``, which also codes an input outside the model's domain.
    Without ``geometry`` the voxel spacing and orientation stay off the wire.  Returns the
    label file, the server's answer and each step's seconds.
    """
    import dataclasses

    from . import api, destinations, encode, read_header
    from .errors import InputError
    src = Path(src)
    t0 = time.perf_counter()
    loaded = api.read_input(src, volume, model=model)
    t1 = time.perf_counter()
    with naming(src):
        array, affine, restore = loaded.array, loaded.affine, lambda labels: labels
        if not geometry:  # the orientation stays here, as the affine does
            array, affine, restore = api.reoriented(array, affine, model=model,
                                                    kind=loaded.kind)
        data = encode(array, model=model, kind=loaded.kind, affine=affine, geometry=geometry,
                      source=loaded.source, force=force)
        header = read_header(data)
        header = dataclasses.replace(header, shape=loaded.array.shape[:header.ndim],
                                     affine=loaded.affine)
    dst = destinations.labels_destination(dst, destinations.default_sgc_path(src), header)
    destinations.not_the_input(src, dst)
    if not force and (there := destinations.existing_output(dst)):
        raise InputError(f"{there}: exists; --force replaces it")
    # A DICOM input is the source of a DICOM Segmentation (-o seg.dcm).
    source = src if loaded.source == "dicom" else None
    api.check_destination(dst, header, source)  # before the upload
    t2 = time.perf_counter()
    with naming(src):
        with Client(url, token, timeout=timeout) as client:
            result = client.fetch(data)
    t3 = time.perf_counter()
    out = api.write_label_file(dst, restore(result.labels), header, source)
    t4 = time.perf_counter()
    return out, result, [("read", t1 - t0), ("encode", t2 - t1), ("request", result.seconds),
                         ("decode labels", result.decode_seconds), ("write", t4 - t3),
                         ("total", t4 - t0)]

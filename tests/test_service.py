"""The service and its client: remote labels equal local ones, every error code, no crash."""
import dataclasses
import gzip
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib

import nibabel as nib
import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import segcodec
from segcodec import container, labelcodec, remote, service, zoo
from segcodec.cli import service as cli_service
from segcodec.remote import (Client, RemoteError, RemoteFormatError, RemoteUnknownModelError,
                             ServerUnreachableError)

from conftest import HIPPO, ISIC, hippo_volume, isic_image

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works the same
    warnings.filterwarnings("ignore", "Using `httpx`")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def files():
    """(name, .sgc bytes) for every fixture; volumes with their geometry, as NIfTI input is."""
    out = [(p.name, segcodec.encode(isic_image(i), source="raster")) for i, p in enumerate(ISIC)]
    for i, p in enumerate(HIPPO):
        volume, affine = hippo_volume(i)
        out.append((p.name, segcodec.encode(volume, affine=affine, source="nifti")))
    return out


@pytest.fixture(scope="module")
def app():
    return service.create_app(device="cpu")


@pytest.fixture(scope="module")
def http(app):
    return TestClient(app)


class Server:
    """uvicorn on a free 127.0.0.1 port in a thread, for the real HTTP client."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: self.server.started, "uvicorn started")
        return self.url

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def url(app):
    with Server(app) as url:
        yield url


@pytest.fixture
def blocked(monkeypatch):
    """Networks that wait for ``release.set()``: keeps requests in flight on demand."""
    release = threading.Event()
    real = service.api.labels_of

    def slow(items, device):
        release.wait(10)
        return real(items, device)

    monkeypatch.setattr(service.api, "labels_of", slow)
    yield release
    release.set()


def wait_until(ready, what: str, timeout: float = 10.0) -> None:
    """Poll ``ready()`` until it is true; fail, naming ``what``, after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
        time.sleep(0.01)


def wait_in_flight(http, n):
    wait_until(lambda: http.get("/healthz").json()["in_flight"] >= n, f"{n} in flight")


def error(response, status, kind):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind and "\n" not in body["message"]
    return body["message"]


def test_remote_labels_equal_local_labels_exactly(files, url):
    with Client(url) as client:
        for name, data in files:
            header = segcodec.read_header(data)
            got = client.fetch(data)
            np.testing.assert_array_equal(got.labels, segcodec.segment(data, device="cpu"),
                                          err_msg=name)
            assert got.sent == len(data) and got.received > 0
            assert got.source == header.source
            assert set(got.server_ms) == {"decode", "segment", "encode"}
            if header.affine is None:
                assert got.affine is None
            else:
                np.testing.assert_array_equal(got.affine, header.affine)


def test_labels_sent_as_png_or_nifti_equal_the_label_streams(files, url):
    with Client(url) as client:
        for name, data in files:
            header = segcodec.read_header(data)
            form = remote.PNG if header.ndim == 2 else remote.NIFTI
            stream, other = client.fetch(data, remote.LABELS), client.fetch(data, form)
            np.testing.assert_array_equal(other.labels, stream.labels, err_msg=name)
            assert other.labels.dtype == np.uint8 and other.classes == stream.classes
            assert other.source == stream.source == header.source
            if header.affine is None:
                assert other.affine is None
            else:
                np.testing.assert_array_equal(other.affine, header.affine)


def test_without_numba_the_client_asks_for_what_compiled_decoders_read(monkeypatch):
    from segcodec import labelkernels
    if "numba" in labelkernels.KERNELS:
        assert remote.preferred_answer(2) == remote.preferred_answer(3) == remote.LABELS
    monkeypatch.setattr(labelkernels, "fastest", labelkernels.KERNELS["numpy"])
    assert (remote.preferred_answer(2), remote.preferred_answer(3)) == (remote.PNG, remote.NIFTI)


def test_client_refuses_an_answer_larger_than_its_cap(files, url):
    with Client(url, max_response_bytes=20) as client:
        with pytest.raises(RemoteError, match="answer larger than 20 bytes"):
            client.fetch(files[0][1])


def test_models_and_health(http, url):
    models = http.get("/v1/models").json()["models"]
    assert {m["id"] for m in models} == {m["id"] for m in segcodec.list_models()}
    assert all(m["task"] and m["labels"] and "file" not in m for m in models)
    with Client(url) as client:
        assert client.models() == models
        health = client.health()
    assert health["status"] == "ok" and health["models"] == len(models)


def test_other_formats_through_accept(files, http):
    name, data = files[-1]  # a volume with geometry
    local = segcodec.segment(data, device="cpu")
    affine = segcodec.read_header(data).affine
    r = http.post("/v1/segment", content=data, headers={"Accept": service.NIFTI})
    img = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    np.testing.assert_array_equal(np.asarray(img.dataobj), local)
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    r = http.post("/v1/segment", content=data, headers={"Accept": "image/png;q=0.9, "
                                                                  "application/x-npy"})
    assert r.headers["content-type"] == service.NPY
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), local)
    np.testing.assert_allclose(json.loads(r.headers["x-segcodec-affine"]), affine)
    assert "PNG holds 2D" in error(http.post("/v1/segment", content=data,
                                             headers={"Accept": "image/png"}),
                                   406, "not_acceptable")
    error(http.post("/v1/segment", content=data, headers={"Accept": "text/html"}),
          406, "not_acceptable")
    name, data = files[0]  # a 2-class photograph: an indexed PNG of the label values
    r = http.post("/v1/segment", content=data, headers={"Accept": "image/*"})
    png = Image.open(io.BytesIO(r.content))
    assert png.mode == "P"
    np.testing.assert_array_equal(np.asarray(png), segcodec.segment(data, device="cpu"))


def test_malformed_and_corrupted_files_are_400(files, http):
    data = files[0][1]
    assert "truncated" in error(http.post("/v1/segment", content=b""), 400, "bad_sgc")
    assert "magic" in error(http.post("/v1/segment", content=b"x" * 40), 400, "bad_sgc")
    flipped = data[:25] + bytes([data[25] ^ 0xFF]) + data[26:]
    assert "CRC" in error(http.post("/v1/segment", content=flipped), 400, "bad_sgc")
    error(http.post("/v1/segment", content=data, headers={"Content-Length": "x"}),
          400, "bad_request")


def test_unknown_model_is_422_and_named(files, http, url):
    header, payload = container.read(files[0][1])
    data = container.write(dataclasses.replace(header, model_id=bytes(6)), payload)
    assert "000000000000" in error(http.post("/v1/segment", content=data),
                                   422, "unknown_model")
    with Client(url) as client, pytest.raises(RemoteUnknownModelError, match="000000000000"):
        client.segment(data)
    with Client(url) as client, pytest.raises(RemoteFormatError) as err:
        client.segment(b"garbage")
    assert err.value.status == 400 and isinstance(err.value, segcodec.SgcFormatError)


def test_too_large_is_413_from_length_and_from_the_stream(files):
    limit = len(files[0][1])
    http = TestClient(service.create_app(device="cpu", max_body=limit, warm=False))
    big = b"SG" + bytes(limit + 40)
    assert f"over the limit of {limit}" in error(http.post("/v1/segment", content=big),
                                           413, "too_large")
    # no Content-Length:
    chunked = http.post("/v1/segment", content=iter([big[:limit // 2], big[limit // 2:]]))
    error(chunked, 413, "too_large")
    # exactly the limit passes
    assert http.post("/v1/segment", content=files[0][1]).status_code == 200


def test_token_is_401_when_missing_or_wrong(files):
    http = TestClient(service.create_app(device="cpu", token="s3cret", warm=False))
    data = files[0][1]
    error(http.post("/v1/segment", content=data), 401, "unauthorized")
    wrong = http.post("/v1/segment", content=data, headers={"Authorization": "Bearer nope"})
    assert error(wrong, 401, "unauthorized") and wrong.headers["www-authenticate"] == "Bearer"
    error(http.get("/v1/models"), 401, "unauthorized")
    assert http.get("/healthz").status_code == 200  # load balancers probe without it
    ok = http.post("/v1/segment", content=data, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_full_queue_is_503_then_serves_again(files, blocked):
    http = TestClient(service.create_app(device="cpu", max_queue=1, warm=False))
    data = files[0][1]
    first = []
    worker = threading.Thread(target=lambda: first.append(http.post("/v1/segment", content=data)))
    worker.start()
    wait_in_flight(http, 1)
    busy = http.post("/v1/segment", content=data)
    assert "busy" in error(busy, 503, "busy") and busy.headers["retry-after"] == "1"
    blocked.set()
    worker.join(10)
    assert first[0].status_code == 200
    assert http.post("/v1/segment", content=data).status_code == 200


def test_requests_that_wait_together_share_a_batch(files, monkeypatch):
    sizes, release = [], threading.Event()
    real = service.api.labels_of

    def counted(items, device):
        release.wait(10)
        sizes.append(len(items))
        return real(items, device)

    monkeypatch.setattr(service.api, "labels_of", counted)
    app = service.create_app(device="cpu", max_batch=4, warm=False)
    http, data, answers = TestClient(app), files[0][1], []
    threads = [threading.Thread(target=lambda: answers.append(
        http.post("/v1/segment", content=data))) for _ in range(6)]
    for t in threads:
        t.start()
    # All six admitted: in the networks' first batch (as many as had queued when it was taken,
    # waiting for the release) or queued for the next, so some batch holds several.  (Polling
    # for five queued, as this once did, timed out whenever the first batch took two or more.)
    wait_in_flight(http, 6)
    release.set()
    for t in threads:
        t.join(30)
    assert max(sizes) > 1 and sum(sizes) == 6
    local = segcodec.segment(data, device="cpu")
    for r in answers:  # batched convolutions may round differently: near-ties could flip
        assert r.status_code == 200
        assert (labelcodec.decode(r.content).labels == local).mean() > 0.999


def test_client_retries_503_with_backoff_then_gives_up(files, blocked):
    app = service.create_app(device="cpu", max_queue=1, warm=False)
    data = files[0][1]
    with Server(app) as url, Client(url) as first:
        holder = threading.Thread(target=first.segment, args=(data,))
        holder.start()
        wait_in_flight(TestClient(app), 1)
        with Client(url, retries=2, backoff=0.01) as impatient:
            with pytest.raises(RemoteError, match="503.*after 2 retries") as err:
                impatient.segment(data)
            assert err.value.status == 503
        with Client(url, retries=6, backoff=0.05) as patient:
            statuses, send = [], patient._bounded

            def watched(*args, **kwargs):
                response = send(*args, **kwargs)
                statuses.append(response.status_code)
                blocked.set()  # the server is freed once the client has been told to wait
                return response

            patient._bounded = watched
            got = patient.fetch(data)
        assert statuses[0] == 503 and statuses[-1] == 200  # it waited, then was answered
        np.testing.assert_array_equal(got.labels, segcodec.segment(data, device="cpu"))
        holder.join(10)


def test_unreachable_and_silent_servers_are_clear_errors(files):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with pytest.raises(ServerUnreachableError, match="cannot reach"):  # nothing listens
        Client(f"http://127.0.0.1:{port}", retries=0).segment(files[0][1])
    sock.listen()  # accepts connections into the backlog, never answers
    with pytest.raises(ServerUnreachableError, match="no answer within 0.3 s"):
        Client(f"http://127.0.0.1:{port}", timeout=0.3).segment(files[0][1])
    sock.close()


class RawServer:
    """A loopback server that answers each request with the next of ``answers`` (raw HTTP
    bytes) and then closes the connection, whatever the answer said about keeping it."""

    def __init__(self, answers: list[bytes]):
        self.answers, self.connections = list(answers), 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.answers:
            conn, _ = self.sock.accept()
            with conn:
                self.connections += 1
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                conn.sendall(self.answers.pop(0))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()
        self.thread.join(5)


def answer(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\n{head}\r\n").encode() + body


def test_a_kept_alive_connection_the_server_closed_is_opened_again():
    """The server says nothing of closing, then closes: the next request reconnects once."""
    healthy = answer(b'{"status": "ok", "models": 1}')
    with RawServer([healthy, healthy]) as server, Client(server.url, retries=0) as client:
        assert client.health()["status"] == "ok"
        assert client.health()["status"] == "ok"
    assert server.connections == 2


def test_an_answer_in_an_encoding_not_asked_for_is_refused():
    body = gzip.compress(b'{"status": "ok"}')
    with RawServer([answer(body, "Content-Encoding: gzip")]) as server:
        with Client(server.url) as client, pytest.raises(RemoteError, match="gzip"):
            client.health()


def test_an_answer_cut_short_is_an_error_not_a_shorter_answer():
    body = b'{"status": "ok", "models": 1}'
    cut = answer(body)[:-10]  # Content-Length promises 10 bytes more, then the socket closes
    with RawServer([cut]) as server, Client(server.url, retries=0) as client:
        with pytest.raises(ServerUnreachableError, match="10 bytes before the end"):
            client.health()


def test_a_server_url_and_token_are_checked_before_any_request():
    for url in ("http://", "http://127.0.0.1:99999", "ftp://host"):
        with pytest.raises(RemoteError):
            Client(url)
    with pytest.raises(RemoteError, match="one line"):
        Client("http://127.0.0.1:8080", token="a\nb")


def recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


@st.composite
def malformed(draw, valid):
    data = draw(st.sampled_from(valid))
    how = draw(st.sampled_from(["random", "truncate", "flip", "flip+crc", "splice+crc"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    i = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:i]
    flipped = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if how == "flip":
        return flipped
    if how == "flip+crc":  # past the CRC: exercises every field check and the payload decoder
        return recrc(flipped)
    return recrc(data[:i] + draw(st.binary(max_size=40)) + data[i:])


def test_malformed_uploads_never_break_the_server(files, http):
    valid = [d for _, d in files]

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(malformed(valid))
    def upload(body):
        r = http.post("/v1/segment", content=body)  # a server-side exception fails here
        assert r.status_code in (200, 400, 413, 422), r.text
        if r.status_code != 200:
            assert "\n" not in r.json()["message"]

    upload()
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.post("/v1/segment", content=valid[0]).status_code == 200


def test_send_file_is_public_api_and_returns_the_answer_and_its_steps(url, tmp_path):
    from segcodec import remote
    src = tmp_path / "vol.nii.gz"
    shutil.copy(HIPPO[0], src)
    out, answer, steps = remote.send_file(src, tmp_path / "labels.npy", url)
    np.testing.assert_array_equal(np.load(out), answer.labels)
    assert [name for name, _ in steps] == ["read", "encode", "request", "decode labels",
                                           "write", "total"]
    with pytest.raises(segcodec.InputError, match="exists"):
        remote.send_file(src, out, url)  # kept without force


def test_send_and_segment_remote_write_aligned_labels(files, url, tmp_path):
    src = tmp_path / "vol.nii.gz"
    shutil.copy(HIPPO[0], src)
    result = CliRunner().invoke(cli_service.send, [str(src), "--remote", url])
    assert result.exit_code == 0, result.output
    assert "sent" in result.output and "received" in result.output and "request" in result.output
    out, image = nib.load(tmp_path / "vol.labels.nii.gz"), nib.load(src)
    local = segcodec.segment(segcodec.encode(np.asarray(image.dataobj), affine=image.affine))
    np.testing.assert_array_equal(np.asarray(out.dataobj), local)
    np.testing.assert_allclose(out.affine, image.affine, atol=1e-5)
    result = CliRunner().invoke(cli_service.send, [str(src), "--remote", url, "--no-geometry",
                                                   "-o", str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 0, result.output  # geometry stayed here, labels still aligned
    np.testing.assert_allclose(nib.load(tmp_path / "x.nii.gz").affine, image.affine, atol=1e-5)

    (tmp_path / "a.sgc").write_bytes(files[0][1])
    from segcodec.cli.main import main
    result = CliRunner().invoke(main, ["segment", str(tmp_path / "a.sgc"), "--remote", url])
    assert result.exit_code == 0, result.output
    out = tmp_path / "a.labels.png"
    np.testing.assert_array_equal(np.asarray(Image.open(out)),
                                  segcodec.segment(files[0][1], device="cpu"))
    printed = result.output
    assert f"sent {len(files[0][1])} bytes" in printed and "decode labels" in printed
    assert "(server: " in printed and f"-> {out} (" in printed


def test_send_to_nowhere_is_one_line(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = CliRunner().invoke(cli_service.send, [str(tmp_path / "a.jpg"), "--remote",
                                                       f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and "cannot reach" in result.output
    assert result.output.count("\n") == 1 and not list(tmp_path.glob("*labels*"))


def test_serve_in_a_subprocess(files, tmp_path):
    (tmp_path / "token").write_text("t0ken\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "segcodec.cli.main", "serve", "--port",
                             str(port), "--token-file", str(tmp_path / "token"), "--device",
                             "cpu", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        with Client(url, "t0ken", timeout=5) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    client.health()
                    break
                except ServerUnreachableError:
                    assert proc.poll() is None, proc.stdout.read().decode()
                    assert time.monotonic() < deadline, "server did not start in 90 s"
                    time.sleep(0.2)
            for _, data in files:
                np.testing.assert_array_equal(client.segment(data),
                                              segcodec.segment(data, device="cpu"))
        with Client(url, "wrong") as client, pytest.raises(RemoteError, match="401"):
            client.segment(files[0][1])
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_slow_uploads_time_out_and_never_hold_an_inference_slot(files):
    """Loopback only, bounded: 3 uploads that stall after one byte, beside normal requests."""
    app = service.create_app(device="cpu", max_queue=1, warm=False, body_timeout=1.0)
    data = files[0][1]
    with Server(app) as url:
        stalled = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nS")
            stalled.append(s)
        try:
            with Client(url, retries=0) as client:  # the only slot is free
                np.testing.assert_array_equal(client.segment(data), segcodec.segment(data))
            answers = []
            for s in stalled:
                s.settimeout(10)
                answers.append(s.recv(200))
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        finally:
            for s in stalled:
                s.close()


def test_a_file_declaring_more_voxels_than_the_limit_is_413_before_any_work(files, monkeypatch):
    http = TestClient(service.create_app(device="cpu", warm=False, max_output_voxels=1000))
    monkeypatch.setattr(service.api, "decode", lambda data: pytest.fail("decoded"))
    message = error(http.post("/v1/segment", content=files[0][1]), 413, "too_large")
    assert "declares 65536 voxels" in message


def test_a_volume_larger_than_its_model_takes_is_400(http, files):
    import dataclasses

    from segcodec import container
    volume = next(data for name, data in files if name.endswith(".nii.gz"))
    header, payload = container.read(volume)
    data = container.write(dataclasses.replace(header, shape=(200, 200, 200)), payload)
    message = error(http.post("/v1/segment", content=data), 400, "bad_sgc")
    assert f"is more than model {zoo.default_for(3).name} takes" in message


def test_send_of_a_dicom_series_can_answer_a_dicom_segmentation(url, tmp_path):
    import highdicom as hd
    from test_io import write_lps_series
    folder = write_lps_series(tmp_path / "series")
    result = CliRunner().invoke(cli_service.send, [str(folder), "--remote", url,
                                                   "-o", str(tmp_path / "seg.dcm")])
    assert result.exit_code == 0, result.output
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    local = segcodec.segment(segcodec.encode_file(folder, tmp_path / "x.sgc").read_bytes())
    from segcodec.io import dicom
    uids = [ds.SOPInstanceUID for _, ds in dicom.series(folder)]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True)
    np.testing.assert_array_equal(frames, local.transpose(2, 1, 0))


@pytest.mark.parametrize("codes", ["PSR", "RPS", "LPS"])
def test_send_without_geometry_keeps_a_non_ras_volumes_labels_in_place(url, tmp_path, codes):
    """The orientation is worked out and undone here; only the affine stays off the wire."""
    image = nib.load(HIPPO[0])
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(image.affine),
                                           nib.orientations.axcodes2ornt(codes))
    moved = image.as_reoriented(ornt)
    src = tmp_path / f"{codes}.nii.gz"
    nib.save(moved, src)
    result = CliRunner().invoke(cli_service.send, [str(src), "--remote", url, "--no-geometry"])
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / f"{codes}.labels.nii.gz")
    with_geometry = segcodec.segment(segcodec.encode(src))
    np.testing.assert_array_equal(np.asarray(out.dataobj), with_geometry)
    np.testing.assert_allclose(out.affine, moved.affine, atol=1e-5)


def test_send_takes_force_as_its_refusal_says(url, tmp_path):
    volume = np.random.default_rng(0).normal(size=(90, 90, 90)).astype(np.float32)
    src = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 0.5, 1.0])), src)
    result = CliRunner().invoke(cli_service.send, [str(src), "--remote", url])
    assert result.exit_code == 1 and "--force" in result.output
    result = CliRunner().invoke(cli_service.send, [str(src), "--remote", url, "--force"])
    assert result.exit_code == 0, result.output


def test_the_client_takes_a_files_path_and_numbers_out_of_range_are_usage_errors(files, url,
                                                                                  tmp_path):
    name, data = files[0]
    (tmp_path / "a.sgc").write_bytes(data)
    with Client(url) as client:
        np.testing.assert_array_equal(client.segment(tmp_path / "a.sgc"), client.segment(data))
        with pytest.raises(segcodec.InputError, match="a .sgc file is bytes or a file's path"):
            client.segment(3)
        with pytest.raises(segcodec.InputError, match="b.sgc: no such file or folder"):
            client.segment(str(tmp_path / "b.sgc"))
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    for timeout in ("0", "-1"):  # -1 ended in a ValueError traceback from the socket
        result = CliRunner().invoke(cli_service.send, [str(tmp_path / "a.jpg"), "--remote", url,
                                                       "--timeout", timeout])
        assert result.exit_code == 2 and "--timeout" in result.output


def test_a_file_slow_to_parse_never_stalls_the_service(files, url, monkeypatch):
    """The header was read on the event loop: a 154-byte file whose metadata took hours to
    check left /healthz and every other request unanswered.  Parsing is in the executor."""
    import concurrent.futures

    import httpx
    entered, release = threading.Event(), threading.Event()
    real = service.api.container.read

    def slow(data):
        entered.set()
        release.wait(10)
        return real(data)

    monkeypatch.setattr(service.api.container, "read", slow)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/v1/segment", content=files[0][1],
                              timeout=30)
        try:
            assert entered.wait(10)
            assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
        finally:
            release.set()
        assert pending.result().status_code == 200


def test_send_replaces_nothing_without_force_and_takes_volume(url, tmp_path):
    """send replaced the user's files (and its own labels when run twice) without --force,
    and told the user of a 4D NIfTI to pass --volume, which it did not take."""
    image = nib.load(HIPPO[0])
    (tmp_path / "marker.nii.gz").write_bytes(b"mine")
    src = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([np.asarray(image.dataobj)] * 2, -1), image.affine), src)
    args = [str(src), "--remote", url, "-o", str(tmp_path / "marker.nii.gz")]
    result = CliRunner().invoke(cli_service.send, args)
    assert result.exit_code == 1 and "pick one with --volume N" in result.output
    result = CliRunner().invoke(cli_service.send, args + ["--volume", "1"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'marker.nii.gz'}: exists; --force replaces it" in result.output
    assert (tmp_path / "marker.nii.gz").read_bytes() == b"mine"
    result = CliRunner().invoke(cli_service.send, args + ["--volume", "1", "--force"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "marker.nii.gz").dataobj),
                                  segcodec.segment(segcodec.encode(HIPPO[0])))
    result = CliRunner().invoke(cli_service.send, [str(src), "--remote", url, "--volume", "0",
                                                   "-o", str(tmp_path / "marker.nii.gz")])
    assert result.exit_code == 1 and "marker.nii.gz: exists" in result.output


def test_half_open_requests_are_closed_and_real_ones_answered(files, app):
    """256 sockets that sent part of a request's headers and nothing more held every slot of
    --max-connections: valid requests got 503, and the sockets were open 35 s later."""
    import httpx
    server = Server(app)
    server.server.config.limit_concurrency = 8
    for key, value in service.uvicorn_options(header_timeout=1.0).items():
        setattr(server.server.config, key, value)
    with server as url:
        port = int(url.rsplit(":", 1)[1])
        idle = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: a\r\nX-")
            idle.append(s)
        for s in idle:  # each is closed by the server: recv sees the end, not a timeout
            s.settimeout(30)
            try:  # by its deadline (the end), or to make room for the eighth (maybe a reset)
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
            s.close()
        r = httpx.post(f"{url}/v1/segment", content=files[0][1], timeout=30)
        assert r.status_code == 200
        # Idle sockets reopened as fast as they are closed still leave real requests answered:
        # a connection over the limit closes the one that has waited longest.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        for s in idle:
            s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: a\r\nX-")
        for _ in range(3):
            r = httpx.post(f"{url}/v1/segment", content=files[0][1], timeout=30)
            assert r.status_code == 200
        for s in idle:
            s.close()
        big = {"X-Padding": "a" * (32 << 10)}  # headers of 32 KB were answered 200
        assert httpx.get(f"{url}/healthz", headers=big, timeout=30).status_code == 431
        many = {f"X-{i}": "a" for i in range(10_000)}
        try:
            refused = httpx.get(f"{url}/healthz", headers=many, timeout=30).status_code
        except httpx.ReadError:  # closed while the client still sent: unread data gives a reset
            refused = "reset"
        assert refused in (400, 431, "reset")
        with httpx.Client(base_url=url, timeout=30) as client:  # keep-alive works
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
        # Answered before its body was read (406 here; a 401 alike), a request whose body
        # then trickles in, followed by half of the next request, holds no slot for good.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n"
                  b"Content-Length: 100\r\n\r\n")
        s.settimeout(30)
        first = b""
        while not first.endswith(b"}"):  # the whole 406: its head, then its JSON body
            first += s.recv(1000)
        assert b" 406 " in first
        s.sendall(b"x" * 100 + b"POST /v1/segment HTTP/1.1\r\nHo")
        answered = b""
        while chunk := s.recv(1000):  # the end: closed by the deadline, not a timeout
            answered += chunk
        assert answered == b""
        s.close()


def test_making_room_drops_never_answered_connections_before_kept_alive_ones(app):
    """A flood of half-requests must not take a client's kept-alive connection: at the limit,
    the longest-waiting connection that was never answered goes first."""
    server = Server(app)
    server.server.config.limit_concurrency = 4
    for key, value in service.uvicorn_options(header_timeout=30.0).items():
        setattr(server.server.config, key, value)
    request = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"

    def answer(sock) -> bytes:
        got = b""
        while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
            chunk = sock.recv(1000)
            if not chunk:
                break
            got += chunk
        return got

    with server as url:
        port = int(url.rsplit(":", 1)[1])
        kept = socket.create_connection(("127.0.0.1", port))  # keep-alive: HTTP/1.1's default
        kept.settimeout(30)
        kept.sendall(request)
        assert b" 200 " in answer(kept)
        time.sleep(0.1)  # it has waited longest when the flood comes
        flood = []
        for _ in range(6):  # each new one at the limit drops a waiting connection
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: a\r\nX-")
            flood.append(s)
            time.sleep(0.05)
        try:
            kept.sendall(request)
            again = answer(kept)
        except (ConnectionResetError, BrokenPipeError):
            again = b""
        assert b" 200 " in again
        for s in flood + [kept]:
            s.close()


def test_shutdown_answers_what_is_queued_then_stops_the_threads(files):
    """The inference thread and the I/O executor lived on after the app shut down."""
    app = service.create_app(device="cpu", warm=False)
    data = files[0][1]
    with TestClient(app) as http:
        assert http.post("/v1/segment", content=data).status_code == 200
        assert app.state.batcher.thread.is_alive()
    assert not app.state.batcher.thread.is_alive()
    with pytest.raises(RuntimeError, match="shutdown"):
        app.state.executor.submit(print)

"""Cohorts: a folder encoded and segmented on a 2-worker Dask LocalCluster gives the bytes and
labels of a local run; failures come back per file; models load once per worker; files of a
killed worker are run again."""
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HIPPO, ISIC
from PIL import Image

import segcodec
from segcodec import batch, zoo
from segcodec.cli.main import main


@pytest.fixture(scope="module")
def client():
    from segcodec import cluster
    with cluster.connect(workers=2) as c:
        yield c


def cohort(folder, copies=3):
    """Hippocampus volumes and ISIC photographs under distinct names, and one broken file."""
    folder.mkdir()
    for i in range(copies):
        for src in HIPPO + ISIC:
            shutil.copy(src, folder / f"c{i}_{src.name}")
    (folder / "broken.png").write_bytes(b"not a png")
    return sorted(folder.iterdir())


def test_a_cluster_gives_the_bytes_and_labels_of_a_local_run(tmp_path, client):
    files = cohort(tmp_path / "in")
    for where in ("local", "cluster"):
        (tmp_path / where).mkdir()
    seen = []
    local = batch.encode_many(files, tmp_path / "local")
    remote = batch.encode_many(files, tmp_path / "cluster", client=client, progress=seen.append)
    assert [r.src for r in remote] == files and len(seen) == len(files)
    failed = [r for r in remote if r.error]
    assert [r.src.name for r in failed] == ["broken.png"] and "cannot read image" in \
        failed[0].error
    assert [r.error for r in local] == [r.error for r in remote]
    for a, b in zip(local, remote):
        if not a.error:
            assert a.dst.read_bytes() == b.dst.read_bytes() and a.bpp == b.bpp
    sgc = sorted((tmp_path / "cluster").glob("*.sgc"))
    assert len(sgc) == len(files) - 1
    for where in ("labels-local", "labels-cluster"):
        (tmp_path / where).mkdir()
    here = batch.segment_many(sgc, tmp_path / "labels-local")
    there = batch.segment_many(sgc, tmp_path / "labels-cluster", client=client)
    assert not any(r.error for r in here + there)
    for a, b in zip(here, there):
        assert a.dst.name == b.dst.name and a.dst.read_bytes() == b.dst.read_bytes()
    # Each worker loaded the two models these files name once, when the plugin set it up.
    loaded = client.run(lambda dask_worker: dask_worker.plugins["segcodec-models"].loaded)
    defaults = sorted(zoo.default_for(ndim).name for ndim in (2, 3))
    assert all(sorted(names) == defaults for names in loaded.values())
    # ...and no file was loaded again while the files were segmented.
    before = client.run(zoo.loaded)
    batch.segment_many(sgc, tmp_path / "labels-cluster", client=client, force=True)
    assert client.run(zoo.loaded) == before


def test_a_killed_workers_files_are_run_again(tmp_path, client):
    files = [p for p in cohort(tmp_path / "in", copies=4) if p.name != "broken.png"]
    (tmp_path / "out").mkdir()
    killed = []

    def kill_a_busy_worker(result):
        if killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            killed.append(busy[0])
            try:
                client.run(os._exit, 1, workers=busy[:1])
            except Exception:  # the worker dies mid-answer
                pass

    results = batch.encode_many(files, tmp_path / "out", client=client,
                                progress=kill_a_busy_worker)
    assert killed and not any(r.error for r in results)
    local = batch.encode_many(files[:4], tmp_path / "out", force=True)
    assert [r.dst.read_bytes() for r in local] == [r.dst.read_bytes() for r in results[:4]]
    assert len(list((tmp_path / "out").iterdir())) == len(files)  # no partial files


def test_cli_runs_a_folder_on_local_workers_with_the_local_summary(tmp_path):
    files = cohort(tmp_path / "in", copies=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cli = CliRunner()
    local = cli.invoke(main, ["encode", str(tmp_path / "in"), str(tmp_path / "a")])
    workers = cli.invoke(main, ["encode", str(tmp_path / "in"), str(tmp_path / "b"),
                                "--workers", "2"])
    assert local.exit_code == workers.exit_code == 1  # broken.png
    summary = f"{len(files) - 1} written, 1 failed"
    assert summary in local.output and summary in workers.output
    for a in sorted((tmp_path / "a").iterdir()):
        assert a.read_bytes() == (tmp_path / "b" / a.name).read_bytes()
    labels = cli.invoke(main, ["segment", str(tmp_path / "b"), "--workers", "2", "-q"])
    assert labels.exit_code == 0, labels.output
    assert len(list((tmp_path / "b").glob("*.labels.*"))) == 2 * (len(files) - 1)  # + sidecar
    for address, error in (("nonsense://x", "cannot reach the Dask scheduler"),
                           ("sched.json", "no such scheduler file")):
        bad = cli.invoke(main, ["encode", str(files[0]), "--scheduler", address])
        assert bad.exit_code == 1 and error in bad.output and "Traceback" not in bad.output


def test_local_batch_results_are_in_input_order_with_skips(tmp_path):
    files = [p for p in cohort(tmp_path / "in", copies=1) if p.name != "broken.png"][:3]
    (tmp_path / "out").mkdir()
    first = batch.encode_many(files[:1], tmp_path / "out")
    again = batch.encode_many(files, tmp_path / "out", skip_existing=True)
    assert [r.src for r in again] == files
    assert [r.skipped for r in again] == [True, False, False]
    assert first[0].bytes == first[0].dst.stat().st_size
    shape = segcodec.read_header(first[0].dst.read_bytes()).shape
    assert np.isclose(first[0].bpp, first[0].bytes * 8 / np.prod(shape))


def test_remote_segment_on_a_cluster_writes_the_servers_labels(tmp_path, client):
    from test_service import Server

    from segcodec import service
    files = [p for p in cohort(tmp_path / "in", copies=1) if p.name != "broken.png"]
    (tmp_path / "sgc").mkdir()
    sgc = [r.dst for r in batch.encode_many(files, tmp_path / "sgc")]
    for where in ("here", "there"):
        (tmp_path / where).mkdir()
    here = batch.segment_many(sgc, tmp_path / "here")
    with Server(service.create_app(device="cpu")) as url:
        there = batch.segment_many(sgc, tmp_path / "there", remote=url, client=client)
    assert not any(r.error for r in there)
    assert all(f"-> {url}: sent" in r.report for r in there)
    for a, b in zip(here, there):
        assert a.dst.name == b.dst.name
        if a.dst.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(a.dst)), np.asarray(Image.open(b.dst)))
        else:
            assert np.array_equal(np.asarray(nib.load(a.dst).dataobj),
                                  np.asarray(nib.load(b.dst).dataobj))


def test_a_bad_file_fails_alone_and_results_keep_the_callers_paths(tmp_path, client,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [p for p in cohort(tmp_path / "in", copies=1) if p.name != "broken.png"][:2]
    Path("out").mkdir()
    relative = [Path("in") / p.name for p in files]
    encoded = batch.encode_many(relative, "out", client=client)
    assert [r.src for r in encoded] == relative
    assert all(r.dst == Path("out") / (r.src.name.split(".")[0] + ".sgc") for r in encoded)
    Path("out/junk.sgc").write_bytes(b"SG" + bytes(30))
    sgc = [Path("out/junk.sgc")] + [r.dst for r in encoded]
    for c in (None, client):
        results = batch.segment_many(sgc, force=True, client=c)
        assert "junk.sgc" in results[0].error and not any(r.error for r in results[1:])


def test_cluster_options_without_dask_are_one_line(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "segcodec.cluster", None)  # as if not installed
    monkeypatch.delattr(segcodec, "cluster", raising=False)
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    result = CliRunner().invoke(main, ["encode", str(tmp_path / "a.jpg"), "--workers", "2"])
    assert result.exit_code == 1 and "pip install 'segcodec[cluster]'" in result.output
    assert "Traceback" not in result.output


def test_closing_the_local_cluster_kills_slow_workers_without_warnings(monkeypatch):
    """Each --workers batch printed two 'Worker process still alive ..., killing' warnings
    (distributed's nanny, closing workers slow to exit on a busy machine)."""
    import logging

    from segcodec import cluster
    heard = []

    class Collect(logging.Handler):
        def emit(self, record):
            heard.append(record.getMessage())

    nanny = logging.getLogger("distributed.nanny")
    handler = Collect(level=logging.WARNING)
    nanny.addHandler(handler)
    close = cluster.LocalCluster.close

    def slow_close(self, *args, **kwargs):
        nanny.warning("Worker process still alive after 4.0 seconds, killing")
        return close(self, *args, **kwargs)

    monkeypatch.setattr(cluster.LocalCluster, "close", slow_close)
    try:
        with cluster.connect(workers=1) as client:
            assert client.submit(sum, [1, 2]).result() == 3
        assert heard == []
        nanny.warning("after the batch, the nanny's warnings are heard again")
        assert heard == ["after the batch, the nanny's warnings are heard again"]
    finally:
        nanny.removeHandler(handler)

"""segcodec encode | segment | info | models | evaluate | serve | send | train | reproduce |
export."""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path

import click

import segcodec
from segcodec import batch
from segcodec.errors import os_error

from .common import device_option, fail, need_torch, threads_option
from .service import read_token, send, serve
from .train import export, reproduce, train



def _run(fn, *args, **kwargs):
    """Call into the API; user errors become one line on stderr and exit status 1."""
    try:
        return fn(*args, **kwargs)
    except segcodec.SgcError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error(exc))


def _batch(run, n: int, label: str, quiet: bool, line, scheduler=None, workers=None) -> None:
    """``run(client, progress)`` (a ``segcodec.batch`` function) over ``n`` files, here or on
    a Dask cluster; one line per file (``line(result)``) or per error, "N written, M failed"
    after a batch, exit status 1 when any failed.  On a terminal a batch shows a progress bar
    instead of per-file lines, which would break it."""
    bar = n > 1 and not quiet and sys.stderr.isatty()
    counts = {"written": 0, "skipped": 0, "failed": 0}
    progressbar = click.progressbar(length=n, label=label, file=sys.stderr) if bar else None

    def progress(result):
        if result.skipped:
            counts["skipped"] += 1
            if not quiet and not bar:  # said per file, as a written one is
                click.echo(f"{result.src} -> {result.dst}: exists; skipped")
        elif result.error:
            click.echo(f"segcodec: error: {result.error}", err=True)
            counts["failed"] += 1
        else:
            counts["written"] += 1
            if not quiet and not bar:
                click.echo(line(result))
        if bar:
            progressbar.update(1)

    with progressbar if bar else contextlib.nullcontext():
        if scheduler or workers:
            _run(_on_cluster, run, progress, scheduler, workers)
        else:
            _run(run, None, progress)
    if n > 1 and (not quiet or counts["failed"]):  # -q: nothing on success
        click.echo(f"{counts['written']} written, "
                   + (f"{counts['skipped']} skipped, " if counts["skipped"] else "")
                   + f"{counts['failed']} failed", err=True)
    if counts["failed"]:
        sys.exit(1)


def _on_cluster(run, progress, scheduler, workers):
    try:
        from segcodec import cluster
    except ImportError as exc:
        raise segcodec.InputError("--workers and --scheduler need Dask: pip install "
                                  "'segcodec[cluster]'") from exc
    with cluster.connect(scheduler, workers) as client:
        return run(client, progress)


def _check_resume(force: bool, skip_existing: bool) -> None:
    if force and skip_existing:
        fail("--force and --skip-existing exclude each other")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(segcodec.__version__, prog_name="segcodec")
def main() -> None:
    """Compress medical images to tiny .sgc files and segment them without rebuilding pixels."""
    # Libraries' warnings (pydicom, Pillow, nibabel) as one line each, not a source excerpt.
    warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(
        f"segcodec: warning: {str(message).splitlines()[0] if str(message) else category}",
        err=True)
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # it warns and logs the same thing
    _exit_on_sigterm()


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C (exit status 143), so temporary files are removed."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


_force = click.option("--force", is_flag=True,
                      help="Replace outputs that exist (encode: and code inputs outside the "
                           "model's domain).")
_skip = click.option("--skip-existing", is_flag=True,
                     help="Leave outputs that exist as they are (resume a batch).")


def _cluster_options(command):
    command = click.option("--scheduler", metavar="ADDRESS",
                           help="Run the batch on this Dask cluster (tcp://host:8786, or a "
                                "scheduler file); workers share this file system.")(command)
    return click.option("--workers", type=click.IntRange(1),
                        help="Run the batch on a local Dask cluster of N processes.")(command)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="The .sgc file, or an existing folder for several inputs.")
@click.option("--model", help="Model name or id (default: by input kind, 2D or 3D).")
@click.option("--no-geometry", is_flag=True,
              help="Leave out voxel spacing and orientation (saves 24-48 bytes).")
@click.option("--meta", multiple=True, metavar="KEY=VALUE",
              help="Store a metadata entry (zstd-compressed JSON; costs bytes).")
@click.option("--volume", type=int, metavar="N", help="Code volume N of a 4D NIfTI.")
@click.option("--kind", type=click.Choice(["2d", "3d"]),
              help="Settle an array (.npy) that could be an image or a volume.")
@_force
@_skip
@_cluster_options
@threads_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def encode(paths, output, model, no_geometry, meta, volume, kind, force, skip_existing,
           scheduler, workers, quiet):
    """Compress images or volumes: encode SRC [DEST.sgc], or encode SRC... [DIR].

    SRC is a PNG/JPEG, NIfTI, .npy, DICOM file, DICOM series folder, or a folder of images.
    Without a destination each .sgc lands beside its input.  The last of several paths is
    the destination when it ends in .sgc or is an existing folder holding no images; -o
    names one explicitly.  A batch carries on past a bad file.
    """
    paths = list(paths)
    dest = output
    last = paths[-1]
    if dest is None and len(paths) > 1 and (
            last.suffix.lower() == ".sgc"
            or last.is_dir() and not batch.holds_inputs(last)):
        dest = paths.pop()
    elif dest is None and len(paths) > 1 and last.is_dir() and not quiet:
        # as gzip takes it; but `encode DIR OUT/` reads as cp, so say which it was
        click.echo(f"segcodec: note: {last} holds images, so it is one more input, not the "
                   f"destination (to make it that, name it with -o alone: -o {last})", err=True)
    metadata = {}
    for item in meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--meta takes KEY=VALUE, got {item!r}")
        metadata[key] = value
    sources = [p for src in paths for p in batch.expand(src)]
    _check_resume(force, skip_existing)
    _batch(lambda client, progress: batch.encode_many(
               sources, dest, model=model, geometry=not no_geometry,
               metadata=metadata or None, force=force, skip_existing=skip_existing,
               volume=volume, kind=kind, client=client, progress=progress),
           len(sources), "encoding", quiet,
           lambda r: (f"{r.src} -> {r.dst}: {r.bytes} bytes, {r.bpp:.4f} bpp, "
                      f"{r.seconds:.2f} s"), scheduler, workers)


@main.command()
@click.argument("sgc_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Label file (.png, .nii.gz, .npy, or .dcm: a DICOM Segmentation, with "
                   "--source) or, for several inputs, an existing folder. Default: beside the "
                   "input, as NAME.labels.<kind of the original input>.")
@device_option
@threads_option
@_force
@_skip
@_cluster_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option("--remote", metavar="URL", help="Segment on a segcodec server (segcodec serve).")
@click.option("--token-file", type=click.Path(path_type=Path),
              help="Bearer token for --remote (default: $SEGCODEC_TOKEN).")
@click.option("--overlay", type=click.Path(path_type=Path), metavar="PNG",
              help="Also write a quick look of the labels over the image (needs --source).")
@click.option("--source", type=click.Path(path_type=Path),
              help="The original image (file or DICOM series folder) of a single .sgc, for "
                   "--overlay or a .dcm output.")
def segment(sgc_files, output, device, force, skip_existing, scheduler, workers, quiet, remote,
            token_file, overlay, source):
    """Turn .sgc files (or folders of them) into label maps, without rebuilding the image."""
    if not remote:
        need_torch("segment (g and s; or --remote URL)")
    sources = []
    for src in sgc_files:
        found = sorted(p for p in src.glob("*.sgc") if not batch.is_hidden(p)) \
            if src.is_dir() else [src]
        if not found:
            fail(f"{src}: no .sgc files in this folder")
        sources += found
    _check_resume(force, skip_existing)
    as_seg = output is not None and output.name.lower().endswith(".dcm")
    if (overlay is not None or as_seg) and (len(sources) != 1 or remote or scheduler or workers):
        fail("--overlay and a .dcm output take one local .sgc file")
    if source is not None and overlay is None and not as_seg:
        fail("--source is the original image of one .sgc, for --overlay or a .dcm output; "
             "give one of them")
    if overlay is not None and overlay.exists() and not force:
        fail(f"{overlay}: exists; --force replaces it")
    token = _run(read_token, token_file) if remote else None

    def line(r):
        done = f"{r.src} -> {r.dst} ({r.seconds:.2f} s)"
        return f"{r.report}\n{done}" if r.report else done

    _batch(lambda client, progress: batch.segment_many(
               sources, output, device=device, remote=remote, token=token, force=force,
               skip_existing=skip_existing, overlay=overlay, source=source, client=client,
               progress=progress),
           len(sources), "segmenting", quiet, line, scheduler, workers)


@main.command()
@click.argument("sgc_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(sgc_file, as_json):
    """Show a .sgc file's header."""
    data = _run(sgc_file.read_bytes)
    try:
        d = segcodec.info(data)
    except segcodec.SgcError as exc:
        fail(f"{sgc_file}: {exc}")  # named, as segment's errors are
    header = segcodec.read_header(data)
    if as_json:
        click.echo(json.dumps(d, indent=1))
        return
    click.echo(f"{sgc_file}: segcodec format v{d['format_version']}")
    click.echo(f"  model       {d['model_id']} ({d['model'] or 'not installed here'})")
    click.echo(f"  image       {'x'.join(map(str, d['shape']))}, {d['channels']} channel(s), "
               f"{header.ndim}D, from {d['source']}")
    click.echo(f"  latents     {'x'.join(map(str, d['latent_shape']))} bits")
    if d["labels"]:
        click.echo(f"  labels      {', '.join(f'{i} {n}' for i, n in enumerate(d['labels']))}")
    if header.affine is not None:
        from nibabel.orientations import aff2axcodes
        spacing = (header.affine[:3, :3] ** 2).sum(0) ** 0.5
        click.echo(f"  geometry    {''.join(aff2axcodes(header.affine))}, voxel size "
                   f"{' x '.join(f'{s:.3g}' for s in spacing)} mm, origin "
                   f"({', '.join(f'{v:.4g}' for v in header.affine[:3, 3])}) mm")
    else:
        click.echo("  geometry    none")
    if header.metadata:
        click.echo(f"  metadata    {json.dumps(header.metadata)}")
    click.echo(f"  size        {d['file_bytes']} bytes = {d['header_bytes']} header + "
               f"{d['payload_bytes']} payload; {d['bpp']:.4f} bpp")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """List the models this install can decode (--json: loaded, with every detail)."""
    if as_json:
        click.echo(json.dumps(_run(segcodec.list_models), indent=1))
        return
    from segcodec import zoo
    index = zoo.read_index()  # the built-in models, without loading them
    defaults = set(index["defaults"].values())
    for name, m in sorted(index["models"].items()):
        tags = ["default"] * (name in defaults) + ["deprecated"] * (name in index["deprecated"])
        click.echo(f"{m['id']}  {name:<24} {m['ndim']}D  {m['task']}"
                   + (f"  ({', '.join(tags)})" if tags else ""))
        click.echo(f"{'':14}labels: {', '.join(m['labels'])}")
    extra = [p for p in zoo.model_files() if not zoo.is_builtin(p)]
    if extra:  # models of one's own: their manifests are inside, so they are loaded
        loaded = {m.path: m for m in zoo.installed().values()}
        for path in extra:
            if path not in loaded:
                click.echo(f"{'':14}{path} (from ${zoo.PATH_ENV}), not used: "
                           f"{zoo.broken().get(path, 'not loadable')}")
                continue
            m = loaded[path]
            click.echo(f"{m.model_id.hex()}  {m.name:<24} {m.ndim}D  {m.manifest.task}  "
                       f"(from ${zoo.PATH_ENV})")
            click.echo(f"{'':14}labels: {', '.join(m.labels)}")
    if not index["models"] and not zoo.model_files():
        click.echo("no models installed")


@main.command()
@click.argument("model")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="An MSD / nnU-Net folder (imagesTr/ + labelsTr/, or imagesTs/ + labelsTs/) "
                   "or a folder of images/ and masks/.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Folder for cases.csv and summary.json. Default: evaluate-MODEL/.")
@click.option("--force", is_flag=True, help="Code cases outside the model's domain too.")
@device_option
@threads_option
def evaluate(model, data, output, force, device):
    """Score MODEL on a labelled data set: per-case Dice, IoU, bytes and bpp (cases.csv),
    and their means (summary.json)."""
    need_torch("evaluate")
    from segcodec import datasets, zoo
    from segcodec import evaluate as evaluation
    out = output or Path(f"evaluate-{model}")
    found = _run(zoo.find, model)  # a bad model or folder fails before the progress bar shows
    _run(datasets.cases, data)
    with click.progressbar(length=1, label=f"evaluating {model}", file=sys.stderr) as bar:
        def progress(done, total):
            bar.length = total
            bar.update(done - bar.pos)
        summary = _run(evaluation.run, found, data, out, force=force, device=device,
                       progress=progress)
    means = ", ".join(f"{k} {v:.4g}" for k, v in summary["mean"].items())
    click.echo(f"{summary['model']} on {summary['coded']} of {summary['cases']} cases: "
               f"{means or 'none coded'} -> {out}")
    if summary["failed"]:  # as a batch does: the scores stand, but not for every case
        click.echo(f"segcodec: {summary['failed']} case(s) not coded; their errors are in "
                   f"{out / 'cases.csv'}", err=True)
        sys.exit(1)


main.add_command(serve)
main.add_command(send)
main.add_command(train)
main.add_command(export)
main.add_command(reproduce)

if __name__ == "__main__":
    main()

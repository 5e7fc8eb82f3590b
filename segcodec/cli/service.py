"""segcodec serve | send, and the remote path of ``segcodec segment --remote``."""
from __future__ import annotations

import os
from pathlib import Path

import click

import segcodec

from .common import device_option, fail, need_torch, threads_option

TOKEN_ENV = "SEGCODEC_TOKEN"


def read_token(path) -> str | None:
    """The bearer token: first line of ``path``, else $SEGCODEC_TOKEN, else None."""
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        token = (Path(path).read_text().strip().splitlines() or [""])[0].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise segcodec.InputError(f"{path}: cannot read the token file ({exc})") from exc
    if not token:
        raise segcodec.InputError(f"{path}: the token file is empty")
    return token


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@device_option
@threads_option
@click.option("--token-file", type=click.Path(path_type=Path),
              help="Require 'Authorization: Bearer <first line of this file>'.")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(64),
              help="Largest accepted .sgc file, in bytes (413 above).")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(1),
              help="Requests in flight before new ones get 503.")
@click.option("--workers", type=click.IntRange(1), help="Threads that parse and code files.")
@click.option("--max-batch", type=click.IntRange(1),
              help="Files per network call (default: 8 on a GPU, 1 on the CPU).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a request's line and headers may take to arrive (the connection "
                   "is closed beyond: idle half-open sockets hold no slot for long).")
@click.option("--body-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a request's body may take to arrive (408 beyond).")
@click.option("--max-output-voxels", default=1 << 24, show_default=True,
              type=click.IntRange(1), help="Largest label map answered (413 above).")
@click.option("--max-connections", default=256, show_default=True, type=click.IntRange(1),
              help="Open connections before new ones get 503 (uvicorn's limit).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info"]),
              default="info", show_default=True)
def serve(host, port, device, token_file, max_body, max_queue, workers, max_batch,
          header_timeout, body_timeout, max_output_voxels, max_connections, log_level):
    """Serve segmentation over HTTP: POST a .sgc to /v1/segment, get its label map.

    Stateless: run several replicas behind any HTTP load balancer (health check /healthz).
    Plain HTTP: off a trusted network, put it behind a TLS-terminating proxy and set a token.
    """
    need_torch("serve")
    import uvicorn

    from segcodec import service
    from segcodec.service import create_app
    try:
        token = read_token(token_file) if token_file else None  # never from the environment
        app = create_app(device=device, token=token, max_body=max_body,
                         max_queue=max_queue, workers=workers, max_batch=max_batch,
                         body_timeout=body_timeout, max_output_voxels=max_output_voxels)
    except segcodec.SgcError as exc:
        fail(str(exc))
    config = app.state.config
    click.echo(f"segcodec: {len(segcodec.list_models())} models on {config['device']}, "
               f"batch {config['max_batch']}, token {'on' if config['token'] else 'off'}; "
               f"http://{host}:{port}/v1/segment", err=True)
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"segcodec: warning: no --token-file, and {host} is reachable from other "
                   "machines: anyone there can use this server", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                limit_concurrency=max_connections,
                **service.uvicorn_options(header_timeout=header_timeout))


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@threads_option
@click.option("--remote", required=True, metavar="URL", help="The server, http://host:port.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Label file (.png, .nii.gz, .npy; .dcm, a DICOM Segmentation, for a DICOM "
                   "input) or folder. Default: beside the input, as NAME.labels.<kind of the "
                   "input>.")
@click.option("--model", help="Model name or id (default: by input kind, 2D or 3D).")
@click.option("--no-geometry", is_flag=True,
              help="Keep voxel spacing and orientation off the wire; the labels still get "
                   "the input's affine, locally.")
@click.option("--token-file", type=click.Path(path_type=Path),
              help=f"Bearer token file (default: ${TOKEN_ENV}).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the server.",
              type=click.FloatRange(0, min_open=True))
@click.option("--volume", type=click.IntRange(0), metavar="N",
              help="Send volume N of a 4D NIfTI.")
@click.option("--force", is_flag=True,
              help="Replace labels that exist, and code an input outside the model's domain "
                   "(as encode --force does).")
def send(src, remote, output, model, no_geometry, token_file, timeout, volume, force):
    """Encode an image here, segment it on a server, write labels aligned with the input."""
    from segcodec import remote as client
    try:
        out, answer, steps = client.send_file(src, output, remote, read_token(token_file),
                                              model=model, geometry=not no_geometry,
                                              timeout=timeout, volume=volume, force=force)
    except segcodec.SgcError as exc:
        fail(str(exc))
    click.echo(client.report(str(src), remote, answer, steps))
    click.echo(f"{src} -> {out}")

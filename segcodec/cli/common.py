"""What every `segcodec` command shares: the one-line error and the --device option."""
from __future__ import annotations

import sys

import click

# Checked by segcodec.api.resolve_device, which names what it accepts in its one-line error.
device_option = click.option("--device", default="auto", show_default=True,
                             help="Where g and s run: auto, cpu, cuda or cuda:N.")


def _set_threads(ctx, param, value):
    from segcodec import backend
    backend.set_threads(value)
    return value


threads_option = click.option(
    "--threads", type=click.IntRange(1), default=1, show_default=True, expose_value=False,
    callback=_set_threads, is_eager=True,
    help="CPU threads for C (numpy) and for g and s (torch). One is fastest on a shared "
         "machine (README: Threads).")


def need_torch(what: str, extra: str = "server") -> None:
    """Fail in one line, naming the extra to install, where this install has no torch."""
    from segcodec import backend
    try:
        backend.require_torch(what, extra)
    except backend.MissingExtra as exc:
        fail(str(exc))


def fail(message: str) -> None:
    """Print ``segcodec: error: MESSAGE`` on stderr and exit with status 1."""
    click.echo(f"segcodec: error: {message}", err=True)
    sys.exit(1)

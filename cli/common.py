"""What every `segcodec` command shares: the one-line error and the --device option."""
from __future__ import annotations

import sys

import click

# Checked by segcodec.api.resolve_device, which names what it accepts in its one-line error.
device_option = click.option("--device", default="auto", show_default=True,
                             help="Where g and s run: auto, cpu, cuda or cuda:N.")


def fail(message: str) -> None:
    """Print ``segcodec: error: MESSAGE`` on stderr and exit with status 1."""
    click.echo(f"segcodec: error: {message}", err=True)
    sys.exit(1)

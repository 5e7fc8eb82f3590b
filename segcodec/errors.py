"""Every error segcodec raises on bad input is an ``SgcError``; its message is one line."""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["SgcError", "SgcFormatError", "UnknownModelError", "InputError", "os_error",
           "naming"]


class SgcError(Exception):
    """Base class: a user-facing error with a one-line message."""


class SgcFormatError(SgcError, ValueError):
    """A ``.sgc`` file is malformed, truncated or corrupted; the message names the field."""


class UnknownModelError(SgcError, LookupError):
    """The model id of a ``.sgc`` file (or a ``--model`` name) is not installed."""


class InputError(SgcError, ValueError):
    """An image or volume cannot be encoded: wrong shape, dtype, values or file."""


def os_error(exc: OSError, path=None) -> str:
    """The one line for an operating system's error about ``path`` (or the file it names): a
    missing one is worded as segcodec's own check of an input is ("no such file or folder")."""
    why = "no such file or folder" if isinstance(exc, FileNotFoundError) else exc.strerror
    name = exc.filename or path
    return f"{name}: {why or exc}" if name else str(why or exc)


@contextmanager
def naming(path):
    """Prefix the message of an ``SgcError`` raised inside with the file it concerns (none
    where ``path`` is None: bytes given as they are)."""
    try:
        yield
    except SgcError as exc:
        if path is not None:
            exc.args = (f"{path}: {exc}",)  # the same error, attributes and cause kept
        raise

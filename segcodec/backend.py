"""What this install can run: encoding needs numpy alone; segmenting, serving, training and the
bench need torch, which ``pip install 'segcodec[server]'`` (or ``[train]``, ``[bench]``) adds."""
from __future__ import annotations

import os
import sys

from .errors import SgcError

__all__ = ["MissingExtra", "has_torch", "require_torch", "THREADS_ENV", "set_threads"]


class MissingExtra(SgcError):
    """A command needs a package this install does not have; the message names the extra."""


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_torch(what: str, extra: str = "server") -> None:
    """MissingExtra, in one line, unless torch can be imported."""
    if not has_torch():
        raise MissingExtra(f"{what} needs torch, which this install lacks: "
                           f"pip install 'segcodec[{extra}]'")


# Threads: C's convolutions are small matrix products, for which a BLAS's threads cost more
# than they give (on a 2-core machine with another job, numpy's default threads made C 10x
# slower than one thread), and so are g and s for torch (one ISIC segment 27x slower).
THREADS_ENV = "SEGCODEC_THREADS"  # set_threads passes its choice to worker processes here
_threads: int | None = None


def set_threads(n: int | None) -> None:
    """Threads for C's numpy products and torch's g and s from now on, in this process and
    the workers it starts; None: one for C, torch's own default."""
    global _threads
    _threads = n
    if n is None:
        os.environ.pop(THREADS_ENV, None)
        return
    os.environ[THREADS_ENV] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _from_environment() -> int | None:
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def blas_threads() -> int:
    return _threads or _from_environment() or 1


_controller = None


def blas_limits():
    """A context in which numpy's BLAS runs ``blas_threads()`` threads.  threadpoolctl's
    controller is made once: making one scans the process's libraries, ~2 ms, which was 15%
    of encoding an ISIC image when done twice an image."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller.limit(limits=blas_threads(), user_api="blas")


def torch_threads() -> int | None:
    return _threads or _from_environment()

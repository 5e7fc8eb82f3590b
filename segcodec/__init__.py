"""segcodec: compress medical images to a few hundred bytes that a server segments directly.

    >>> import segcodec
    >>> data = segcodec.encode(image)        # numpy array -> .sgc bytes
    >>> labels = segcodec.segment(data)      # .sgc bytes -> uint8 label map
"""
from .container import Header
from .errors import InputError, SgcError, SgcFormatError, UnknownModelError

__version__ = "0.3.0"

# Reading a header, --help and --version need none of the coding path (numpy's C, and torch
# for g and s), so the API is imported on first use (PEP 562).
_API = ("encode", "segment", "decode", "encode_file", "segment_file", "list_models", "Decoded",
        "reoriented")

__all__ = [*_API, "read_header", "info", "Header", "SgcError", "SgcFormatError",
           "UnknownModelError", "InputError", "__version__"]


def read_header(data) -> Header:
    """Parse and validate a ``.sgc`` header (CRC included) without decoding the payload;
    ``data`` is the file's bytes or its path."""
    from .container import read, sgc_bytes
    from .errors import naming
    data, path = sgc_bytes(data)
    with naming(path):
        return read(data)[0]


def info(data) -> dict:
    """A ``.sgc`` file's header as a dict (``Header.to_dict``), with its whole-file and payload
    bytes, its bits per input pixel (header included), and the model's name and label names
    where this install has the model; ``data`` is the file's bytes or its path.  Reads no
    network and needs no torch."""
    import contextlib
    import math

    from . import modelfiles
    from .container import read, sgc_bytes
    from .errors import naming
    raw, path = sgc_bytes(data)
    with naming(path):
        header = read(raw)[0]
    d = header.to_dict()
    d.update(file_bytes=len(raw), payload_bytes=len(raw) - header.header_bytes,
             bpp=round(len(raw) * 8 / math.prod(header.shape), 6))
    entry = modelfiles.index_entry(header.model_id)  # a built-in model's, without torch
    d["model"] = entry["name"] if entry else modelfiles.name_for(header.model_id)
    d["labels"] = entry["labels"] if entry else None
    if entry is None and d["model"]:  # a model of one's own: its manifest names them
        with contextlib.suppress(SgcError):  # a file that does not load names none
            from .api import label_sidecar
            d["labels"] = [x["name"] for x in label_sidecar(header.model_id)["labels"]]
    return d


def __getattr__(name: str):
    if name in _API or name == "api":
        import importlib
        api = importlib.import_module(".api", __name__)
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'segcodec' has no attribute {name!r}")

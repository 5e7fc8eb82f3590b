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

__all__ = [*_API, "read_header", "Header", "SgcError", "SgcFormatError", "UnknownModelError",
           "InputError", "__version__"]


def read_header(data) -> Header:
    """Parse and validate a ``.sgc`` header (CRC included) without decoding the payload;
    ``data`` is the file's bytes or its path."""
    from .container import read, sgc_bytes
    from .errors import naming
    data, path = sgc_bytes(data)
    with naming(path):
        return read(data)[0]


def __getattr__(name: str):
    if name in _API or name == "api":
        import importlib
        api = importlib.import_module(".api", __name__)
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'segcodec' has no attribute {name!r}")

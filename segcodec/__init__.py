"""segcodec: compress medical images to a few hundred bytes that a server segments directly.

    >>> import segcodec
    >>> data = segcodec.encode(image)        # numpy array -> .sgc bytes
    >>> labels = segcodec.segment(data)      # .sgc bytes -> uint8 label map
"""
from .api import (Decoded, decode, encode, encode_file, list_models, read_header, segment,
                  segment_file)
from .container import Header
from .errors import InputError, SgcError, SgcFormatError, UnknownModelError

__version__ = "0.1.0"

__all__ = ["encode", "segment", "decode", "read_header", "encode_file", "segment_file",
           "list_models",
           "Decoded", "Header", "SgcError", "SgcFormatError", "UnknownModelError",
           "InputError", "__version__"]

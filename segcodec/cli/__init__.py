"""The ``segcodec`` command line, installed as ``segcodec.cli``; it calls only the public API."""

"""The ``mmsb`` command line: argument parsing and output formatting over the library."""

from mmsb.cli.app import cli, main

__all__ = ["cli", "main"]

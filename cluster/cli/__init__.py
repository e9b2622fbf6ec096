"""Layer 7, ``lstm-tune``: a thin shell over :mod:`cluster.api` (parse arguments, call, print)."""

from cluster.cli.commands import app, main

__all__ = ["app", "main"]

"""The `gradviz` command: render, check, examples, coverage, app."""

from gradviz.cli.main import main

__all__ = ["main"]

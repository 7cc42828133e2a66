"""What a person at a terminal uses: the ``blink-watcher`` command line and its commands.

The console script is ``watcher.cli:main`` (and ``python -m watcher``). The
daemon never imports this package; this package imports the daemon.
"""

from __future__ import annotations

from watcher.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]

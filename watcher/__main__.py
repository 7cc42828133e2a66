"""``python -m watcher``: the same as the ``blink-watcher`` command."""

from __future__ import annotations

import sys

from watcher.cli import main

sys.exit(main())

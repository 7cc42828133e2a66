"""Where a relative state path resolves when the config does not say: systemd's, else ours."""

from __future__ import annotations

import os
from pathlib import Path

# Where the packaged units keep their config, and the StateDirectory= each gives
# its daemon: /etc/blink-watcher/config.toml -> /var/lib/blink-watcher, and the
# template's /etc/blink-watcher/NAME.toml -> /var/lib/blink-watcher-NAME.
SYSTEM_CONFIG_DIR = Path("/etc/blink-watcher")
SYSTEM_STATE_ROOT = Path("/var/lib")


def state_base(config_file: str) -> tuple[Path, str]:
    """Where a relative ``[state] path`` resolves, and why (for messages).

    ``$STATE_DIRECTORY`` under systemd. Run by hand against a packaged unit's
    config (``status``, ``deliveries``), the directory that unit's daemon uses,
    so the operator reads the same file the service writes. Else the working
    directory.
    """
    root = os.environ.get("STATE_DIRECTORY")
    if root:
        return Path(root), "$STATE_DIRECTORY"
    config = Path(config_file).resolve()
    if config.parent == SYSTEM_CONFIG_DIR:
        name = "blink-watcher" if config.stem == "config" else f"blink-watcher-{config.stem}"
        return (
            SYSTEM_STATE_ROOT / name,
            f"the StateDirectory of the unit that reads {config}",
        )
    return Path.cwd(), "the working directory"

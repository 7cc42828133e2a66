"""``python -m watcher.sim``: run the simulator from a shell (see watcher/sim/command.py)."""

import sys

from watcher.sim.command import main

if __name__ == "__main__":
    sys.exit(main())

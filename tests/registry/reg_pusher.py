"""A separate process that pushes files to the registry named by the environment.

Used by the concurrency and crash tests: ``python reg_pusher.py NAME OUT FILE...``. It opens the
registry ($AMBER_REGISTRY, $AMBER_CATALOG, ...), writes ``OUT.ready``, waits for ``OUT.go`` (so
that every pusher starts at once), pushes each file in turn and writes the versions it got to
``OUT`` as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from amber.registry import Registry


def main(argv: list[str]) -> int:
    name, out, *files = argv
    reg = Registry()
    reg.models()  # import everything and connect before the start signal
    Path(f"{out}.ready").touch()
    go = Path(f"{out}.go")
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            print("no start signal within 120 s", file=sys.stderr)
            return 3
        time.sleep(0.005)
    versions = [reg.push(name, f).version for f in files]
    Path(out).write_text(json.dumps(versions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

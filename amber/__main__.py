"""``python -m amber`` is the ``amber`` command."""

import sys

from amber.cli import main

sys.exit(main())

"""``python -m ntksolve``: the same as the ``ntksolve`` command."""

import sys

from ntksolve.cli import main

sys.exit(main())

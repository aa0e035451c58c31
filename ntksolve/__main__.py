"""``python -m ntksolve``: the same as the ``ntksolve`` command."""
import sys

from .cli import main

sys.exit(main())

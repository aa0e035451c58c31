"""Optional extras: import one where it is used, or say which extra to install."""

from __future__ import annotations

import importlib


def require(module: str, extra: str, what: str):
    """Import ``module`` for ``what``, or raise an ImportError naming ``pip install 'ntksolve[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the optional extra {extra!r} ({exc}); install it with: pip install 'ntksolve[{extra}]'"
        ) from exc

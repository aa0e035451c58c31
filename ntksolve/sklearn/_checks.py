"""The estimators' parameter checks, and the warning about widths the analytic kernel ignores (private).

Parameters are validated in ``fit`` and in ``load``, never in ``__init__`` (scikit-learn's rule).
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import numpy as np

from ntksolve.standardisation import _column_scaling

#: The width of the default ``hidden_layer_sizes``: the one width the analytic kernel never warns about.
DEFAULT_WIDTH = 512


class AnalyticWidthWarning(UserWarning):
    """``kernel="analytic"`` was given hidden widths it does not use.

    The analytic kernel is the infinitely wide network: of ``hidden_layer_sizes`` it uses only the
    number of hidden layers (the depth), so ``(1, 1)`` predicts exactly what ``(512, 512)`` does.
    Issued once per ``fit`` when a width other than the default 512 is given with the analytic
    kernel. Use ``kernel="empirical"`` for a network of those widths, or state the depth alone with
    the default width, e.g. ``hidden_layer_sizes=(512, 512)``, which does not warn.
    """


def _warn_unused_widths(est):
    """:class:`AnalyticWidthWarning` if the analytic kernel was given widths other than the default."""
    if est._kernel_kind() != "analytic":
        return
    widths = tuple(int(w) for w in est.hidden_layer_sizes)
    if all(w == DEFAULT_WIDTH for w in widths):
        return
    depth = len(widths)
    warnings.warn(
        f"kernel='analytic' is the infinitely wide network: it uses only the depth of hidden_layer_sizes="
        f"{est.hidden_layer_sizes!r} ({depth} hidden layer{'s' if depth != 1 else ''}), not its widths, so it "
        f"predicts what {(DEFAULT_WIDTH,) * depth!r} does. For a network of these widths use kernel='empirical'; "
        f"to give the depth alone, use the default width, hidden_layer_sizes={(DEFAULT_WIDTH,) * depth!r}, "
        "which does not warn",
        AnalyticWidthWarning,
        stacklevel=_caller_level(),
    )


def _caller_level():
    """The ``stacklevel`` of the first frame outside ntksolve, for a warning issued by its caller."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


# ---------------------------------------------------------------------------------------------
# parameter validation (in fit and in load, never in __init__)
# ---------------------------------------------------------------------------------------------
def _check_choice(value, name, valid):
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


def _check_real(value, name, *, lower=0.0, strict=False, allow_inf=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    ok = (np.isfinite(v) or (allow_inf and v == np.inf)) and (v > lower if strict else v >= lower)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(
            f"{name} must be a {'finite ' if not allow_inf else ''}number {rel} {lower:g}"
            f"{' (np.inf allowed)' if allow_inf else ''}; got {value!r}"
        )
    return v


def _check_time(value, name, rule):
    t = _check_real(value, name, allow_inf=True)
    if rule.name == "discrete" and np.isfinite(t) and t != round(t):
        raise ValueError(f"{name} must be a whole number of steps (or np.inf) with dynamics='discrete'; got {value!r}")
    if t == np.inf and getattr(rule, "schedule", None) is not None:
        raise ValueError(
            f"{name} = inf has no meaning for a learning-rate schedule (it has no single converged "
            f"limit); set it to a number of steps, e.g. the schedule's total steps; got {value!r}"
        )
    return t


def _standardisation(Y, normalize):
    """Per-output mean and std ``(k,)`` of the targets (0 and 1 without ``normalize``), for targets
    anywhere in the float64 range (``Y.std()`` squares them: inf near 1e155, 0 near 1e-155)."""
    if not normalize:
        return np.zeros(Y.shape[1]), np.ones(Y.shape[1])
    c, m, s, constant = _column_scaling(Y)
    return c * m, np.where(constant, 1.0, c * s)  # a constant target: nothing to scale

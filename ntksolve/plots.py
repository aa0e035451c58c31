"""Figures of a width sweep (:func:`ntksolve.compare`): matplotlib, an optional extra.

Both functions take a :class:`~ntksolve.comparison.CompareReport` or its ``to_dict()`` (as read back
from ``report.json``), draw on a private ``Figure`` with the Agg canvas (no pyplot, so no global
state and no display is touched) and write a PNG.
"""
from __future__ import annotations

import os

import numpy as np

_INSTALL_HINT = "pip install 'ntksolve[cli]'  (or pip install matplotlib)"


def _figure(width_in: float, height_in: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"figures need matplotlib, which is not installed: {_INSTALL_HINT}") from exc
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_dict(report) -> dict:
    return report.to_dict() if hasattr(report, "to_dict") else report


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def plot_loss_trajectories(report, path) -> str:
    """Real versus predicted train and test loss along training, one colour per width.

    Solid: the real network; dashed: predicted from its own empirical NTK; dotted: from the
    analytic NTK. Log-log axes (step 0 sits at the left edge of a symmetric-log axis).

    Parameters
    ----------
    report : CompareReport or dict
    path : str or path-like
        PNG file to write.

    Returns
    -------
    path : str
    """
    rep = _as_dict(report)
    trajs = rep["trajectories"]
    fig = _figure(11.0, 4.4)
    axes = fig.subplots(1, 2, sharey=False)
    colors = _colors(len(trajs))
    for ax, split in zip(axes, ("train", "test")):
        for c, tr in zip(colors, trajs):
            steps = np.asarray(tr["steps"], dtype=float)
            real = tr.get(f"loss_{split}_real")
            if real is not None:
                real = np.asarray(real, dtype=float)
                ax.plot(steps[: real.size], real, "-", color=c, lw=1.8, label=f"n={tr['width']}")
            for key, style in (("empirical", "--"), ("analytic", ":")):
                pred = tr.get(f"loss_{split}_{key}")
                if pred is not None:
                    ax.plot(steps, np.asarray(pred, dtype=float), style, color=c, lw=1.2)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("gradient-descent step")
        ax.set_ylabel(f"{split} loss  1/(2Nk) Σ‖f−y‖²")
        ax.set_title(f"{split} loss: real (solid), empirical-NTK (dashed), analytic-NTK (dotted)", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="best")
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path


def plot_gap_vs_width(report, path) -> str:
    """Gap between real and predicted outputs against width, log-log, with least-squares fits.

    Parameters
    ----------
    report : CompareReport or dict
    path : str or path-like
        PNG file to write.

    Returns
    -------
    path : str
    """
    rep = _as_dict(report)
    rows = [r for r in rep["rows"] if not r.get("diverged")]
    fig = _figure(6.4, 4.8)
    ax = fig.subplots()
    series = (
        ("gap_test_analytic", "test, analytic NTK", "C0", "o", "-"),
        ("gap_train_analytic", "train, analytic NTK", "C0", "s", "--"),
        ("gap_test_empirical", "test, empirical NTK", "C3", "o", "-"),
        ("gap_train_empirical", "train, empirical NTK", "C3", "s", "--"),
    )
    for key, label, color, marker, ls in series:
        pts = [(r["width"], r.get(key)) for r in rows]
        pts = [(w, g) for w, g in pts if g is not None and g > 0]
        if not pts:
            continue
        w = np.array([p[0] for p in pts], dtype=float)
        g = np.array([p[1] for p in pts], dtype=float)
        if w.size >= 2:
            slope, icpt = np.polyfit(np.log(w), np.log(g), 1)
            grid = np.geomspace(w.min(), w.max(), 50)
            ax.plot(grid, np.exp(icpt) * grid**slope, ls, color=color, lw=1.0, alpha=0.8)
            label = f"{label}: slope {slope:+.2f}"
        ax.plot(w, g, marker, color=color, mfc="none" if "train" in key else color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width n")
    ax.set_ylabel("gap  RMS(f_real − f_pred) / RMS(y)")
    ax.set_title("real vs predicted outputs (theory: analytic ~ n^-1/2, empirical ~ n^-1)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path


__all__ = ["plot_loss_trajectories", "plot_gap_vs_width"]

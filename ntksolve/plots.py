"""Figures of a width sweep (:func:`ntksolve.compare`): matplotlib, an optional extra.

Both functions take a :class:`~ntksolve.report.CompareReport` or its ``to_dict()`` (as read back
from ``report.json``), draw on a private ``Figure`` with the Agg canvas (no pyplot, so no global
state and no display is touched) and write a PNG. A prediction that diverges (or a real run that
diverged) is not drawn as if it were a result: the figure says which widths it left out and why,
and a partial report (``state`` not ``"complete"``) says so in the title.
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


def _state_note(rep) -> str:
    state = rep.get("state", "complete")
    if state == "complete":
        return ""
    done, pending = rep.get("widths_done", []), rep.get("widths_pending", [])
    return f"{state}: {len(done)} of {len(done) + len(pending)} widths"


def _left_out(rows, pred: str) -> str:
    """A note naming the widths whose ``pred`` prediction (or real run) is not drawn, or ''."""
    div = [r["width"] for r in rows if r.get(f"status_{pred}", "ok") not in ("ok", "n/a")]
    real = [r["width"] for r in rows if r.get("diverged")]
    parts = []
    if div:
        crit = {r.get("critical_learning_rate_analytic") if pred == "analytic" else r.get("critical_learning_rate")
                for r in rows if r["width"] in div}
        lr = {r.get("learning_rate") for r in rows if r["width"] in div}
        rate = ""
        if len(lr) == 1 and None not in crit | lr:
            rate = (f": learning rate {lr.pop():.3g} ≥ critical {crit.pop():.3g}" if len(crit) == 1 else
                    f": learning rate {lr.pop():.3g} ≥ their critical rates {min(crit):.3g}–{max(crit):.3g}")
        which = "all widths" if len(div) == len(rows) else "n = " + ", ".join(map(str, div))
        parts.append(f"{pred}-NTK prediction diverges for {which}{rate}; not drawn")
    if real:
        parts.append("real training diverged for n = " + ", ".join(map(str, real)))
    return "\n".join(parts)


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
    fig = draw_loss_trajectories(report)
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path


def draw_loss_trajectories(report, quantity: str = "loss"):
    """The figure of :func:`plot_loss_trajectories` (or, ``quantity="accuracy"``, of
    :func:`plot_accuracy_trajectories`), not written (a matplotlib ``Figure``)."""
    rep = _as_dict(report)
    trajs = rep["trajectories"]
    rows = rep.get("rows", [])
    settings = rep.get("settings", {})
    fig = _figure(11.0, 4.4)
    axes = fig.subplots(1, 2, sharey=False)
    colors = _colors(len(trajs))
    ce = settings.get("loss_function") == "cross_entropy"
    unit = ("accuracy" if quantity == "accuracy" else
            "loss  mean cross-entropy" if ce else "loss  1/(2Nk) Σ‖f−y‖²")
    twin = "loss-matched flow on the " if str(settings.get("dynamics", "")).startswith("Adam") else ""
    for ax, split in zip(axes, ("train", "test")):
        for c, tr in zip(colors, trajs):
            steps = np.asarray(tr["steps"], dtype=float)
            real = tr.get(f"{quantity}_{split}_real")
            if real is not None:
                real = np.asarray(real, dtype=float)
                ax.plot(steps[: real.size], real, "-", color=c, lw=1.8, label=f"n={tr['width']}")
            for key, style in (("empirical", "--"), ("analytic", ":")):
                pred = tr.get(f"{quantity}_{split}_{key}")
                if pred is not None and tr.get(f"status_{key}", "ok") == "ok":
                    ax.plot(steps, np.asarray(pred, dtype=float), style, color=c, lw=1.2)
        ax.set_xscale("symlog", linthresh=1.0)
        if quantity == "loss":
            ax.set_yscale("log")
        ax.set_xlabel("optimiser step" if settings.get("twin") else "gradient-descent step")
        ax.set_ylabel(f"{split} {unit}")
        ax.set_title(f"{split} {quantity}: real (solid), {twin}empirical-NTK (dashed), analytic-NTK (dotted)",
                     fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="best")
    notes = [n for n in (_left_out(rows, "empirical"), _left_out(rows, "analytic")) if n]
    if notes:
        # de-duplicate the real-run line, which both calls add
        lines = list(dict.fromkeys("\n".join(notes).split("\n")))
        axes[0].text(0.02, 0.02, "\n".join(lines), transform=axes[0].transAxes, fontsize=7, va="bottom",
                     color="firebrick", bbox=dict(facecolor="white", alpha=0.8, edgecolor="firebrick"))
    if _state_note(rep):
        fig.suptitle(f"partial report ({_state_note(rep)})", color="firebrick", fontsize=10)
    return fig


def plot_accuracy_trajectories(report, path) -> str:
    """Real versus predicted train and test accuracy along training (cross-entropy sweeps), one
    colour per width, styled as :func:`plot_loss_trajectories`.

    Parameters
    ----------
    report : CompareReport or dict
    path : str or path-like
        PNG file to write.

    Returns
    -------
    path : str
    """
    fig = draw_loss_trajectories(report, "accuracy")
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
    fig = draw_gap_vs_width(report)
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path


def draw_gap_vs_width(report):
    """The figure of :func:`plot_gap_vs_width`, not written (a matplotlib ``Figure``)."""
    rep = _as_dict(report)
    all_rows = rep["rows"]
    rows = [r for r in all_rows if not r.get("diverged")]
    fig = _figure(6.4, 4.8)
    ax = fig.subplots()
    series = (
        ("gap_test_analytic", "test, analytic NTK", "C0", "o", "-"),
        ("gap_train_analytic", "train, analytic NTK", "C0", "s", "--"),
        ("gap_test_empirical", "test, empirical NTK", "C3", "o", "-"),
        ("gap_train_empirical", "train, empirical NTK", "C3", "s", "--"),
    )
    for key, label, color, marker, ls in series:
        pred = key.rsplit("_", 1)[1]
        pts = [(r["width"], r.get(key)) for r in rows if r.get(f"status_{pred}", "ok") == "ok"]
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
    ce = rep.get("settings", {}).get("loss_function") == "cross_entropy"
    ax.set_ylabel("gap  RMS(f_real − f_pred) / " + ("RMS(f_real − f_0), logits" if ce else "RMS(y)"))
    ax.set_title("real vs predicted outputs (theory: analytic ~ n^-1/2, empirical ~ n^-1)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    notes = [n for n in (_left_out(all_rows, "empirical"), _left_out(all_rows, "analytic")) if n]
    if notes:
        lines = list(dict.fromkeys("\n".join(notes).split("\n")))
        ax.text(0.02, 0.02, "\n".join(lines), transform=ax.transAxes, fontsize=7, va="bottom", color="firebrick",
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="firebrick"))
    if _state_note(rep):
        fig.suptitle(f"partial report ({_state_note(rep)})", color="firebrick", fontsize=10)
    return fig


__all__ = ["plot_loss_trajectories", "plot_accuracy_trajectories", "plot_gap_vs_width", "draw_loss_trajectories", "draw_gap_vs_width"]

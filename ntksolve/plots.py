"""Figures of a width sweep (:func:`ntksolve.compare`): matplotlib, an optional extra.

Every function takes a :class:`~ntksolve.report.CompareReport` or its ``to_dict()`` (as read back
from ``report.json``), draws on a private ``Figure`` with the Agg canvas (no pyplot, so no global
state and no display is touched) and writes a PNG. The figures share one encoding:

- a width has one colour in every figure (:func:`width_colors`: viridis, keyed by ``log2`` width
  over the sweep's widths);
- the real network is drawn solid in its width's colour, the empirical-NTK prediction dashed
  black, the analytic-NTK prediction dotted red.

A prediction that diverges (or a real run that diverged) is not drawn as if it were a result: the
figure says which widths it left out and why, and a partial report (``state`` not
``"complete"``) says so in the title. Step 0, where the real run and both predictions start from
the same ``f_0``, is left off the logarithmic step axis.
"""

from __future__ import annotations

import os
import textwrap
from typing import Dict, List, Sequence

import numpy as np

from ntksolve._docstrings import fill_sections
from ntksolve._atomic import write_atomically

_INSTALL_HINT = "pip install 'ntksolve[cli]'  (or pip install matplotlib)"
#: How each prediction is drawn in every figure: (colour, line style, name).
PREDICTION_STYLE = {
    "empirical": ("black", "--", "empirical-NTK prediction"),
    "analytic": ("tab:red", ":", "analytic-NTK prediction"),
}
#: The theory slopes of the gap against width, drawn beside the fitted ones.
THEORY_SLOPES = {"analytic": -0.5, "empirical": -1.0}
#: At most this many widths get their own panels in the trajectory figure.
MAX_PANELS = 4
#: The sections every ``plot_*`` function's docstring shares.
_PLOT_SECTIONS = {
    "plot_parameters": """
    Parameters
    ----------
    report : CompareReport or dict
    path : str or path-like
        PNG file to write.

    Returns
    -------
    path : str
    """
}


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


def _save(fig, path) -> str:
    """Write ``fig`` whole or not at all (an interrupted PNG would be unreadable), in the format of
    the path's extension (PNG without one)."""
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    return write_atomically(path, lambda fh: fig.savefig(fh, format=ext, dpi=110))


def _state_note(rep) -> str:
    state = rep.get("state", "complete")
    if state == "complete":
        return ""
    done, pending = rep.get("widths_done", []), rep.get("widths_pending", [])
    return f"{state}: {len(done)} of {len(done) + len(pending)} widths"


def _wrap(text: str, inches: float, points: float) -> str:
    """``text`` wrapped to about ``inches`` of a line at ``points`` type (a character is ~0.55 em)."""
    chars = max(int(inches * 72.0 / (0.55 * points)), 20)
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


def _title(fig, text: str, rep) -> None:
    note = _state_note(rep)
    inches = fig.get_figwidth() - 0.3
    if note:
        fig.suptitle(_wrap(f"{text}\npartial report ({note})", inches, 10), color="firebrick", fontsize=10)
    else:
        fig.suptitle(_wrap(text, inches, 10), fontsize=10)


def _left_out(rows, pred: str) -> str:
    """A note naming the widths whose ``pred`` prediction (or real run) is not drawn, or ''."""
    div = [r["width"] for r in rows if r.get(f"status_{pred}", "ok") not in ("ok", "n/a")]
    real = [r["width"] for r in rows if r.get("diverged")]
    parts = []
    if div:
        crit = {
            r.get("critical_learning_rate_analytic") if pred == "analytic" else r.get("critical_learning_rate")
            for r in rows
            if r["width"] in div
        }
        lr = {r.get("learning_rate") for r in rows if r["width"] in div}
        rate = ""
        if len(lr) == 1 and None not in crit | lr:
            rate = (
                f": learning rate {lr.pop():.3g} ≥ critical {crit.pop():.3g}"
                if len(crit) == 1
                else f": learning rate {lr.pop():.3g} ≥ their critical rates {min(crit):.3g}–{max(crit):.3g}"
            )
        which = "all widths" if len(div) == len(rows) else "n = " + ", ".join(map(str, div))
        parts.append(f"{pred}-NTK prediction diverges for {which}{rate}; not drawn")
    if real:
        parts.append("real training diverged for n = " + ", ".join(map(str, real)))
    return "\n".join(parts)


def _notes(ax, rows, across: bool = False) -> None:
    """Write the left-out notes of both predictions (each line once) in a box on ``ax``, wrapped to
    its width or (``across``) to the rest of the figure's."""
    lines = list(
        dict.fromkeys(
            "\n".join(n for n in (_left_out(rows, "empirical"), _left_out(rows, "analytic")) if n).split("\n")
        )
    )
    lines = [ln for ln in lines if ln]
    if lines:
        # out of the layout (a long note must not squeeze the panels), wrapped to the figure
        fig = ax.get_figure()
        box = ax.get_position()
        inches = fig.get_figwidth() * ((1.0 - box.x0) if across else box.width) - 0.3
        note = ax.text(
            0.02,
            0.02,
            _wrap("\n".join(lines), inches, 7),
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
            color="firebrick",
            zorder=5,
            bbox=dict(facecolor="white", alpha=0.85, edgecolor="firebrick"),
        )
        note.set_in_layout(False)
        ax.set_zorder(3)  # the note may run over the next panels: draw this panel after them


def width_colors(widths: Sequence[int]) -> Dict[int, tuple]:
    """One RGBA colour per width, the same in every figure of a sweep.

    Viridis (from 0 to 0.85 of its range, the lightest yellows are hard to read on white),
    linear in ``log2`` width between the smallest and the largest of ``widths``.

    Parameters
    ----------
    widths : sequence of int
        The sweep's widths (``settings["widths"]``, so that a partial report keeps its colours).

    Returns
    -------
    dict
        ``{width: (r, g, b, a)}``.
    """
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    ws = sorted({int(w) for w in widths})
    if not ws:
        return {}
    lo, hi = np.log2(ws[0]), np.log2(ws[-1])
    return {w: cmap(0.85 * ((np.log2(w) - lo) / (hi - lo) if hi > lo else 0.0)) for w in ws}


def _sweep_widths(rep) -> List[int]:
    ws = list(rep.get("settings", {}).get("widths") or [])
    return sorted(
        {int(w) for w in ws}
        | {int(r["width"]) for r in rep.get("rows", [])}
        | {int(t["width"]) for t in rep.get("trajectories", [])}
    )


def chosen_widths(widths: Sequence[int], n: int = MAX_PANELS) -> List[int]:
    """At most ``n`` of ``widths`` for the trajectory panels: the smallest, the largest and, between,
    the ones nearest to even steps in ``log`` width (all of them when there are ``n`` or fewer)."""
    ws = sorted({int(w) for w in widths})
    if len(ws) <= n:
        return ws
    return [ws[int(round(i))] for i in np.linspace(0, len(ws) - 1, n)]


# ---------------------------------------------------------------------------------------------
# trajectories: real versus predicted, one column of panels per chosen width
# ---------------------------------------------------------------------------------------------
@fill_sections(_PLOT_SECTIONS)
def plot_loss_trajectories(report, path) -> str:
    """Real versus predicted train and test loss along training, for a few widths side by side.

    One column per chosen width (:func:`chosen_widths`: at most :data:`MAX_PANELS`, smallest to
    largest), train loss above and test loss below, on shared axes so that the columns compare:
    the real network solid in its width's colour, the empirical-NTK prediction dashed, the
    analytic-NTK one dotted, and the gap between the real run and the empirical prediction shaded.
    Log-log axes from step 1.

    {plot_parameters}
    """
    return _save(draw_loss_trajectories(report), path)


@fill_sections(_PLOT_SECTIONS)
def plot_accuracy_trajectories(report, path) -> str:
    """Real versus predicted train and test accuracy along training (cross-entropy sweeps), laid out
    as :func:`plot_loss_trajectories` (linear accuracy axis).

    {plot_parameters}
    """
    return _save(draw_loss_trajectories(report, "accuracy"), path)


def draw_loss_trajectories(report, quantity: str = "loss"):
    """The figure of :func:`plot_loss_trajectories` (or, ``quantity="accuracy"``, of
    :func:`plot_accuracy_trajectories`), not written (a matplotlib ``Figure``).

    Its axes are ``fig.axes[j]`` (train, titled ``"n = <width>"``) and ``fig.axes[m + j]`` (test)
    for the ``j``-th of the ``m`` chosen widths."""
    if quantity not in ("loss", "accuracy"):
        raise ValueError(f"quantity must be 'loss' or 'accuracy', got {quantity!r}")
    rep = _as_dict(report)
    trajs = {int(t["width"]): t for t in rep["trajectories"]}
    rows = rep.get("rows", [])
    by_width = {int(r["width"]): r for r in rows}
    settings = rep.get("settings", {})
    colours = width_colors(_sweep_widths(rep))
    shown = chosen_widths(list(trajs))
    ncol = max(len(shown), 1)
    fig = _figure(max(3.0 * ncol, 6.0) + 0.6, 5.8)
    grid = fig.subplots(2, ncol, sharex=True, sharey="row", squeeze=False)
    ce = settings.get("loss_function") == "cross_entropy"
    unit = "accuracy" if quantity == "accuracy" else "loss, mean cross-entropy" if ce else "loss  1/(2Nk) Σ‖f−y‖²"
    adam = str(settings.get("dynamics", "")).startswith("Adam")
    for j, width in enumerate(shown):
        tr, row = trajs[width], by_width.get(width, {})
        c = colours.get(width, "C0")
        steps = np.asarray(tr["steps"], dtype=float)
        for i, split in enumerate(("train", "test")):
            ax = grid[i, j]
            keep = steps > 0  # step 0 (the shared f_0) has no place on a log axis
            real = tr.get(f"{quantity}_{split}_real")
            if real is not None:
                real = np.asarray(real, dtype=float)
                m = keep[: real.size]
                ax.plot(steps[: real.size][m], real[m], "-", color=c, lw=2.2, label="real network")
            for pred in ("empirical", "analytic"):
                curve = tr.get(f"{quantity}_{split}_{pred}")
                if curve is None or tr.get(f"status_{pred}", "ok") != "ok":
                    continue
                curve = np.asarray(curve, dtype=float)
                colour, ls, name = PREDICTION_STYLE[pred]
                ax.plot(steps[keep], curve[keep], ls, color=colour, lw=1.3, label=name)
                if pred == "empirical" and real is not None and real.size == steps.size and not row.get("diverged"):
                    ax.fill_between(steps[keep], real[keep], curve[keep], color=c, alpha=0.3, lw=0, label="gap")
            gaps = [
                f"{p[:3]} {row[f'gap_{split}_{p}']:.1e}"
                for p in ("empirical", "analytic")
                if row.get(f"gap_{split}_{p}") is not None
            ]
            if gaps:
                ax.text(
                    0.97,
                    0.97,
                    "gap " + ", ".join(gaps),
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=7,
                    bbox=dict(facecolor="white", alpha=0.7, edgecolor="none"),
                )
            ax.set_xscale("log")
            if quantity == "loss":
                ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            if i == 0:
                ax.set_title(f"n = {width}", color=c, fontsize=10, fontweight="bold")
            else:
                ax.set_xlabel("optimiser step" if settings.get("twin") else "gradient-descent step")
            if j == 0:
                ax.set_ylabel(f"{split} {unit}", fontsize=9)
    handles = _trajectory_legend(grid, adam)
    if handles:
        wide = fig.get_figwidth() >= 12.0  # room for the whole legend on one line
        fig.legend(
            handles=handles, loc="outside lower center", ncol=len(handles) if wide else 2, fontsize=8, frameon=False
        )
    _notes(grid[0, 0], rows, across=True)
    n_all = len(trajs)
    which = "" if len(shown) == n_all else f" ({len(shown)} of the {n_all} widths; gap_vs_width.png has all)"
    _title(
        fig,
        f"real training vs its NTK predictions as width grows{which}; "
        f"gap = RMS(f_real − f_pred) / " + ("RMS(f_real − f_0)" if ce else "RMS(y)") + " over the run",
        rep,
    )
    return fig


def _trajectory_legend(grid, adam: bool):
    """Legend handles for what the panels draw (in neutral grey where the colour is the width's)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    drawn = {lab for ax in grid.ravel() for lab in ax.get_legend_handles_labels()[1]}
    out = []
    if "real network" in drawn:
        out.append(Line2D([], [], color="0.45", lw=2.2, label="real network (colour: its width)"))
    for pred in ("empirical", "analytic"):
        colour, ls, name = PREDICTION_STYLE[pred]
        if name in drawn:
            label = f"{name[:-11]}: its loss-matched flow" if adam else name  # Adam has no kernel twin
            out.append(Line2D([], [], color=colour, ls=ls, lw=1.3, label=label))
    if "gap" in drawn:
        out.append(Patch(facecolor="0.45", alpha=0.3, label="shaded: real − empirical-NTK prediction"))
    return out


# ---------------------------------------------------------------------------------------------
# gap against width, with the theory slopes; the kernel's change against width
# ---------------------------------------------------------------------------------------------
@fill_sections(_PLOT_SECTIONS)
def plot_gap_vs_width(report, path) -> str:
    """Gap between real and predicted outputs against width, log-log, with least-squares fits and
    the theory slopes; beside it, the kernel's relative change during training against width.

    {plot_parameters}
    """
    return _save(draw_gap_vs_width(report), path)


def _fit(w: np.ndarray, g: np.ndarray):
    """``(slope, value at the geometric-mean width)`` of the least-squares line of log g on log w."""
    slope, icpt = np.polyfit(np.log(w), np.log(g), 1)
    centre = float(np.exp(np.mean(np.log(w))))
    return float(slope), centre, float(np.exp(icpt) * centre**slope)


def draw_gap_vs_width(report):
    """The figure of :func:`plot_gap_vs_width`, not written (a matplotlib ``Figure``).

    ``fig.axes[0]``: the gaps (markers), their fitted lines (labelled with the slope) and the
    theory lines ``n^-1/2`` (analytic) and ``n^-1`` (empirical), each through its prediction's
    test-gap fit at the geometric-mean width (labelled ``"theory ..."``). ``fig.axes[1]``: the
    final relative kernel change ``‖Θ_T − Θ_0‖ / ‖Θ_0‖`` per width, in the width colours, with
    its fitted slope."""
    rep = _as_dict(report)
    all_rows = rep["rows"]
    rows = [r for r in all_rows if not r.get("diverged")]
    fig = _figure(11.0, 4.6)
    ax, axk = fig.subplots(1, 2, sharex=True)
    colours = width_colors(_sweep_widths(rep))
    for pred in ("analytic", "empirical"):
        colour, _, name = PREDICTION_STYLE[pred]
        for split, marker, ls in (("test", "o", "-"), ("train", "s", "--")):
            key = f"gap_{split}_{pred}"
            pts = [(r["width"], r.get(key)) for r in rows if r.get(f"status_{pred}", "ok") == "ok"]
            pts = [(w, g) for w, g in pts if g is not None and g > 0]
            if not pts:
                continue
            w = np.array([p[0] for p in pts], dtype=float)
            g = np.array([p[1] for p in pts], dtype=float)
            label = f"{split}, {name[:-11]}"
            if w.size >= 2:
                slope, centre, at = _fit(w, g)
                grid = np.geomspace(w.min(), w.max(), 50)
                ax.plot(grid, at * (grid / centre) ** slope, ls, color=colour, lw=1.0, alpha=0.8)
                label += f": fitted slope {slope:+.2f}"
                if split == "test":
                    th = THEORY_SLOPES[pred]
                    wide = np.geomspace(w.min() / 1.3, w.max() * 1.3, 50)
                    power = "-1/2" if th == -0.5 else "-1"
                    ax.plot(
                        wide,
                        at * (wide / centre) ** th,
                        "-",
                        color=colour,
                        lw=5,
                        alpha=0.18,
                        solid_capstyle="butt",
                        label=f"theory, {pred}: $\\propto n^{{{power}}}$ (slope {th:+.1f})",
                    )
                    ax.text(
                        wide[-1],
                        at * (wide[-1] / centre) ** th,
                        f" $n^{{{power}}}$",
                        color=colour,
                        fontsize=8,
                        va="center",
                        ha="left",
                        alpha=0.8,
                    )
            ax.plot(w, g, marker, color=colour, mfc="none" if split == "train" else colour, label=label, ms=6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width n")
    ce = rep.get("settings", {}).get("loss_function") == "cross_entropy"
    ax.set_ylabel("gap  RMS(f_real − f_pred) / " + ("RMS(f_real − f_0), logits" if ce else "RMS(y)"))
    ax.set_title("gap vs width; pale bands: the theory slopes, through each test-gap fit", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    _notes(ax, all_rows)
    # the kernel's change: why the gap shrinks
    pts = [(int(r["width"]), r.get("kernel_change_final")) for r in rows]
    pts = [(w, v) for w, v in pts if v is not None and v > 0]
    for w, v in pts:
        axk.plot([w], [v], "o", color=colours.get(w, "C0"), ms=8, mec="black", mew=0.5)
    if len(pts) >= 2:
        w = np.array([p[0] for p in pts], dtype=float)
        v = np.array([p[1] for p in pts], dtype=float)
        slope, centre, at = _fit(w, v)
        grid = np.geomspace(w.min(), w.max(), 50)
        axk.plot(grid, at * (grid / centre) ** slope, "-", color="0.4", lw=1.0, label=f"fitted slope {slope:+.2f}")
        axk.legend(fontsize=8, loc="upper right")
    axk.set_xscale("log", base=2)
    axk.set_yscale("log")
    axk.set_xlabel("hidden width n")
    axk.set_ylabel("kernel change  ‖Θ_T − Θ_0‖ / ‖Θ_0‖")
    axk.set_title("how far each network's NTK moves during training", fontsize=9)
    axk.grid(True, which="both", alpha=0.3)
    _title(fig, "real training vs its NTK predictions, and the kernel's change, against width", rep)
    return fig


__all__ = [
    "plot_loss_trajectories",
    "plot_accuracy_trajectories",
    "plot_gap_vs_width",
    "draw_loss_trajectories",
    "draw_gap_vs_width",
    "width_colors",
    "chosen_widths",
    "PREDICTION_STYLE",
    "THEORY_SLOPES",
    "MAX_PANELS",
]

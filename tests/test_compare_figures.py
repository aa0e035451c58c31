"""The sweep's figures answer their question: inspected through their matplotlib objects."""

import io
import os
import stat

import numpy as np
import pytest

from ntksolve.comparison import compare
from ntksolve.datasets import default_regression

from compare_support import sweep_on

pytest.importorskip("matplotlib")

from matplotlib.colors import to_rgba  # noqa: E402

from ntksolve.plots import (
    THEORY_SLOPES,
    chosen_widths,
    draw_gap_vs_width,
    draw_loss_trajectories,  # noqa: E402
    width_colors,
)

WIDTHS = [16, 32, 64, 128, 512]


@pytest.fixture(scope="module")
def rep():
    d = default_regression(n_train=40, n_test=30, random_state=1)
    return sweep_on(d, WIDTHS, steps=30, n_records=8, random_state=0).to_dict()


def _solid(ax):
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]


def test_width_colours_are_one_map_keyed_by_log_width():
    c = width_colors([64, 8192, 1024, 128])
    from matplotlib import colormaps

    vir = colormaps["viridis"]
    assert c[64] == vir(0.0) and c[8192] == vir(0.85)
    assert c[1024] == vir(0.85 * 4 / 7)  # log2: 6 .. 13, 1024 is 4 of the 7 octaves in
    assert width_colors([32]) == {32: vir(0.0)}


def test_chosen_widths_span_the_sweep():
    assert chosen_widths([64, 128, 256, 512, 1024, 2048, 4096, 8192]) == [64, 256, 2048, 8192]
    assert chosen_widths([8, 16]) == [8, 16]
    assert chosen_widths(WIDTHS) == [16, 32, 128, 512]


def test_trajectory_small_multiples(rep):
    fig = draw_loss_trajectories(rep)
    shown = chosen_widths(WIDTHS)
    assert len(fig.axes) == 2 * len(shown)  # train above test, one column per chosen width
    colours = width_colors(WIDTHS)
    trajs = {t["width"]: t for t in rep["trajectories"]}
    rows = {r["width"]: r for r in rep["rows"]}
    for j, w in enumerate(shown):
        for i, split in enumerate(("train", "test")):
            ax = fig.axes[i * len(shown) + j]
            assert ax.get_subplotspec().colspan.start == j and ax.get_subplotspec().rowspan.start == i
            assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
            (real,) = _solid(ax)
            steps = np.asarray(trajs[w]["steps"], dtype=float)
            # no step 0 on the log axis: it starts at the first recorded step after it
            assert real.get_xdata()[0] == steps[1] > 0
            np.testing.assert_array_equal(real.get_ydata(), trajs[w][f"loss_{split}_real"][1:])
            assert to_rgba(real.get_color()) == colours[w]
            (emp,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
            (ana,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
            np.testing.assert_array_equal(emp.get_ydata(), trajs[w][f"loss_{split}_empirical"][1:])
            np.testing.assert_array_equal(ana.get_ydata(), trajs[w][f"loss_{split}_analytic"][1:])
            # the shaded gap spans exactly the real curve and the empirical prediction
            (shade,) = ax.collections
            ys = np.concatenate([p.vertices[:, 1] for p in shade.get_paths()])
            lo = np.minimum(real.get_ydata(), emp.get_ydata())
            hi = np.maximum(real.get_ydata(), emp.get_ydata())
            assert ys.min() == pytest.approx(lo.min()) and ys.max() == pytest.approx(hi.max())
            gap_text = " ".join(t.get_text() for t in ax.texts)
            assert f"{rows[w][f'gap_{split}_empirical']:.1e}" in gap_text
        top = fig.axes[j]
        assert top.get_title() == f"n = {w}" and to_rgba(top.title.get_color()) == colours[w]
        assert fig.axes[len(shown) + j].get_xlabel().endswith("step")
    # shared axes per row: the columns compare at a glance
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[1])
    assert not fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[len(shown)])
    assert "4 of the 5 widths" in fig._suptitle.get_text()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "real network (colour: its width)",
        "empirical-NTK prediction",
        "analytic-NTK prediction",
        "shaded: real − empirical-NTK prediction",
    ]


def test_gap_vs_width_draws_the_theory_slopes(rep):
    from ntksolve.report import _loglog_slope

    fig = draw_gap_vs_width(rep)
    ax, axk = fig.axes
    rows = rep["rows"]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for pred, power in (("analytic", "-1/2"), ("empirical", "-1")):
        theory = lines[f"theory, {pred}: $\\propto n^{{{power}}}$ (slope {THEORY_SLOPES[pred]:+.1f})"]
        x, y = np.asarray(theory.get_xdata()), np.asarray(theory.get_ydata())
        assert np.polyfit(np.log(x), np.log(y), 1)[0] == pytest.approx(THEORY_SLOPES[pred], abs=1e-12)
        # anchored on the test gaps: through their least-squares line at the geometric-mean width
        w = np.array([r["width"] for r in rows], dtype=float)
        g = np.array([r[f"gap_test_{pred}"] for r in rows])
        slope, icpt = np.polyfit(np.log(w), np.log(g), 1)
        centre = np.exp(np.mean(np.log(w)))
        th_at_centre = np.exp(np.interp(np.log(centre), np.log(x), np.log(y)))
        assert th_at_centre == pytest.approx(np.exp(icpt) * centre**slope, rel=1e-9)
        # the fitted line's slope is the report's slope, and says so in its label
        expected = _loglog_slope(rows, f"gap_test_{pred}")[0]
        (marker,) = [ln for lab, ln in lines.items() if lab.startswith(f"test, {pred}-NTK")]
        assert f"fitted slope {expected:+.2f}" in marker.get_label()
        np.testing.assert_array_equal(marker.get_ydata(), g)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # the kernel's change as its own panel, one marker per width in that width's colour
    colours = width_colors(WIDTHS)
    pts = [ln for ln in axk.get_lines() if ln.get_marker() == "o"]
    assert [int(p.get_xdata()[0]) for p in pts] == WIDTHS
    for p, r in zip(pts, rows):
        assert p.get_ydata()[0] == r["kernel_change_final"] and to_rgba(p.get_color()) == colours[r["width"]]
    (fit,) = [ln for ln in axk.get_lines() if ln.get_marker() != "o"]
    kc = np.array([r["kernel_change_final"] for r in rows])
    expected = np.polyfit(np.log(WIDTHS), np.log(kc), 1)[0]
    fx, fy = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    assert np.polyfit(np.log(fx), np.log(fy), 1)[0] == pytest.approx(expected, rel=1e-9)
    assert expected < -0.5  # the kernel moves less as width grows
    assert "Θ" in axk.get_ylabel()


def test_partial_report_and_missing_predictions_are_said(rep):
    part = dict(
        rep,
        state="interrupted",
        widths_done=WIDTHS[:2],
        widths_pending=WIDTHS[2:],
        rows=rep["rows"][:2],
        trajectories=rep["trajectories"][:2],
    )
    for fig in (draw_loss_trajectories(part), draw_gap_vs_width(part)):
        assert "partial report (interrupted: 2 of 5 widths)" in fig._suptitle.get_text()
    # colours stay keyed by the whole sweep's widths
    fig = draw_loss_trajectories(part)
    assert to_rgba(_solid(fig.axes[1])[0].get_color()) == width_colors(WIDTHS)[32]
    # a prediction marked as diverging is not drawn and the figure says so
    rows = [dict(r) for r in rep["rows"]]
    trajs = [dict(t) for t in rep["trajectories"]]
    rows[0].update(status_empirical="diverges", gap_train_empirical=None, gap_test_empirical=None)
    trajs[0].update(status_empirical="diverges", loss_train_empirical=None, loss_test_empirical=None)
    fig = draw_loss_trajectories(dict(rep, rows=rows, trajectories=trajs))
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"] and not fig.axes[0].collections
    assert "empirical-NTK prediction diverges for n = 16" in " ".join(t.get_text() for t in fig.axes[0].texts)


def test_cross_entropy_accuracy_and_standard_parameterisation():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    Xt = rng.standard_normal((20, 4))
    yt = (Xt[:, 0] > 0).astype(int) + (Xt[:, 1] > 0.5)
    ce = compare(
        X,
        y,
        [16, 64],
        X_test=Xt,
        y_test=yt,
        loss="cross_entropy",
        steps=10,
        n_records=4,
        progress=False,
        parameterization="standard",
    )
    fig = draw_loss_trajectories(ce, "accuracy")
    assert len(fig.axes) == 4 and fig.axes[0].get_yscale() == "linear"
    t = ce.trajectories[1]
    (real,) = _solid(fig.axes[1])
    np.testing.assert_array_equal(real.get_ydata(), t["accuracy_train_real"][1:])
    # standard parameterisation: no analytic curve, no analytic theory line
    assert not [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    labels = [ln.get_label() for ln in draw_gap_vs_width(ce).axes[0].get_lines()]
    assert not any("analytic" in lab for lab in labels) and any("theory, empirical" in lab for lab in labels)
    assert "mean cross-entropy" in draw_loss_trajectories(ce).axes[0].get_ylabel()
    with pytest.raises(ValueError, match="quantity"):
        draw_loss_trajectories(ce, "gap")


@pytest.mark.parametrize("stop", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_figure_cut_short_leaves_the_previous_file_whole(rep, tmp_path, monkeypatch, stop):
    """A figure is written to a temporary file and renamed over its path: a full disk or a Ctrl-C
    in the middle of the PNG leaves the old figure (or none), never a truncated one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ntksolve.plots import plot_gap_vs_width

    path = tmp_path / "gap_vs_width.png"
    assert plot_gap_vs_width(rep, path) == str(path)
    whole = path.read_bytes()
    assert whole[:8] == b"\x89PNG\r\n\x1a\n" and whole[-8:-4] == b"IEND"  # signature .. the IEND chunk
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() makes a file, not mkstemp's 0600

    real_print_png = FigureCanvasAgg.print_png

    def cut_short(self, filename_or_obj, metadata=None, pil_kwargs=None, **ignored):
        if isinstance(filename_or_obj, io.BytesIO):  # matplotlib's dry run, to place the layout
            return real_print_png(self, filename_or_obj, metadata=metadata, pil_kwargs=pil_kwargs)
        if isinstance(filename_or_obj, (str, os.PathLike)):
            with open(filename_or_obj, "wb") as fh:
                fh.write(whole[:100])
        else:
            filename_or_obj.write(whole[:100])
        raise stop

    monkeypatch.setattr(FigureCanvasAgg, "print_png", cut_short)
    with pytest.raises(type(stop)):
        plot_gap_vs_width(rep, path)
    assert path.read_bytes() == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap_vs_width.png"]
    with pytest.raises(type(stop)):
        plot_gap_vs_width(rep, tmp_path / "new.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap_vs_width.png"]

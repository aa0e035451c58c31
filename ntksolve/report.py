"""The report of a width sweep: its rows, their gaps and slopes, its state, its JSON and its table.

A row's gap is the relative RMSE over the recorded steps and points, ``RMS(f_real - f_pred) / RMS(y)``
(:func:`_rel_rmse`); the slope of each gap against width is the least-squares fit of ``log gap`` on
``log width``, over the widths whose real run and prediction both converged. The report records its
own state (``"running"`` while the sweep runs, then ``"complete"``, ``"interrupted"`` or
``"failed"``), so a report written part-way always says that it is partial, and the versions of
the libraries and the BLAS it ran with (:func:`environment`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ntksolve._atomic import write_atomically

#: The gap keys of a row, in table order: (prediction, split).
GAP_KEYS = ("gap_train_empirical", "gap_test_empirical", "gap_train_analytic", "gap_test_analytic")
SLOPE_KEYS = ("slope_train_empirical", "slope_test_empirical", "slope_train_analytic", "slope_test_analytic")
#: The extra keys of a cross-entropy row: accuracies at the last step, predicted minus real.
CE_KEYS = (
    "accuracy_train_final_real",
    "accuracy_test_final_real",
    "accuracy_test_final_empirical",
    "accuracy_test_final_analytic",
    "accuracy_test_diff_empirical",
    "accuracy_test_diff_analytic",
)
#: ``settings["loss"]``: the loss every trajectory reports.
LOSS_WORDS = {
    "mse": "1/(2Nk) sum ||f - y||^2",
    "cross_entropy": "mean over the examples of -log softmax(f)_label (k = 1: the logistic loss)",
}
#: The states of a report, in the order a sweep passes through them.
STATES = ("running", "complete", "interrupted", "failed")


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
@dataclass
class CompareReport:
    """The result of :func:`compare`.

    Attributes
    ----------
    settings : dict
        Every setting of the sweep (data sizes, network, learning rate, steps, seed, the versions
        of ntksolve and its libraries, timings shared by all widths), JSON-ready.
    rows : list of dict
        One per finished width: gaps, final losses, kernel change, times, ``speedup``, the status
        of each prediction; ``None`` (never NaN) where a value does not exist, with the reason
        beside it (``diverged`` for the real run, ``status_empirical`` / ``status_analytic``).
    trajectories : list of dict
        One per finished width: the recorded ``steps`` and the train/test loss of the real network
        and of both predictions at them (for figures); a prediction that is not ``"ok"`` has no
        curve (``None``).
    state : {"running", "complete", "interrupted", "failed"}
        ``"running"`` until the sweep ends; a report read back with ``"running"`` from a process
        that no longer runs was killed (the widths in ``rows`` are complete).
    message : str
        Why the sweep stopped early (empty when it is running or complete).
    """

    settings: dict
    rows: List[dict] = field(default_factory=list)
    trajectories: List[dict] = field(default_factory=list)
    state: str = "running"
    message: str = ""

    @property
    def interrupted(self) -> bool:
        """``state == "interrupted"``: stopped by ``KeyboardInterrupt``; ``rows`` holds the widths finished before."""
        return self.state == "interrupted"

    @property
    def widths_done(self) -> List[int]:
        return [int(r["width"]) for r in self.rows]

    @property
    def widths_pending(self) -> List[int]:
        done = set(self.widths_done)
        return [int(w) for w in self.settings.get("widths", []) if w not in done]

    def slopes(self) -> dict:
        """Least-squares slope of ``log gap`` against ``log width`` for each gap.

        Only widths whose real run and prediction both converged count; ``None`` with fewer than two."""
        return {s: _loglog_slope(self.rows, g)[0] for s, g in zip(SLOPE_KEYS, GAP_KEYS)}

    def slope_widths(self) -> dict:
        """The widths each slope of :meth:`slopes` was fitted to."""
        return {s: _loglog_slope(self.rows, g)[1] for s, g in zip(SLOPE_KEYS, GAP_KEYS)}

    def to_dict(self) -> dict:
        """JSON-ready dict: ``state``, ``widths_done``/``widths_pending``, the slopes, ``settings``,
        ``rows``, ``trajectories`` (and ``interrupted``, ``state == "interrupted"``)."""
        out = {
            "state": self.state,
            "interrupted": self.interrupted,
            "message": self.message,
            "widths_done": self.widths_done,
            "widths_pending": self.widths_pending,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        out.update(self.slopes())
        out["slope_widths"] = self.slope_widths()
        out["settings"] = self.settings
        out["rows"] = self.rows
        out["trajectories"] = self.trajectories
        return _jsonable(out)

    def write_json(self, path) -> None:
        """Write :meth:`to_dict` to ``path`` atomically (:func:`write_atomically`), so a reader (or a
        crash) sees the old report or the new one.

        Raises ``OSError`` (disk full, no permission) with ``path`` left as it was."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        write_atomically(path, lambda fh: fh.write(text.encode()))

    def table(self) -> str:
        """The per-width results as a fixed-width text table, then the fitted slopes and notes."""
        ce = self.settings.get("loss_function") == "cross_entropy"
        cols = (
            [
                ("width", "width", "{:d}"),
                ("lr", "learning_rate", "{:.3g}"),
                ("gap tr emp", "gap_train_empirical", "{:.2e}"),
                ("gap te emp", "gap_test_empirical", "{:.2e}"),
                ("gap tr ana", "gap_train_analytic", "{:.2e}"),
                ("gap te ana", "gap_test_analytic", "{:.2e}"),
                ("test loss", "loss_test_final_real", "{:.4f}"),
                ("pred emp", "loss_test_final_empirical", "{:.4f}"),
                ("pred ana", "loss_test_final_analytic", "{:.4f}"),
            ]
            + (
                [
                    ("acc real", "accuracy_test_final_real", "{:.3f}"),
                    ("acc emp", "accuracy_test_final_empirical", "{:.3f}"),
                    ("acc ana", "accuracy_test_final_analytic", "{:.3f}"),
                ]
                if ce
                else []
            )
            + [
                ("dTheta", "kernel_change_final", "{:.2e}"),
                ("t_pred s", "time_predict", "{:.3f}"),
                ("t_train s", "time_train", "{:.2f}"),
                ("speedup*", "speedup", None),
            ]
        )
        keys = [c[1] for c in cols]
        pred_cols = {p: [i for i, key in enumerate(keys) if key.endswith("_" + p)] for p in ("empirical", "analytic")}
        results = slice(keys.index("gap_train_empirical"), keys.index("kernel_change_final") + 1)
        header = [c[0] for c in cols]
        body = []
        for r in self.rows:
            cells = []
            for _, key, fmt in cols:
                v = r.get(key)
                cells.append("-" if v is None else (_fmt_speedup(v) if fmt is None else fmt.format(v)))
            for pred, idx in pred_cols.items():
                status = r.get(f"status_{pred}", "ok")
                if status not in ("ok", "n/a"):
                    for i in idx:
                        cells[i] = status
            if r.get("diverged"):
                cells[results] = ["diverged"] + ["-"] * (results.stop - results.start - 1)
            body.append(cells)
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        for b in body:
            lines.append("  ".join(c.rjust(w) for c, w in zip(b, widths)))
        lines.append("")
        n_rows = len(self.rows)
        parts = []
        for k, (v, ws) in zip(SLOPE_KEYS, (_loglog_slope(self.rows, g) for g in GAP_KEYS)):
            used = "" if len(ws) == n_rows else f" ({len(ws)} of {n_rows} widths)"
            parts.append(f"{k[6:]} {_fmt_opt(v, '{:+.3f}')}{used}")
        lines.append("log-log slope of gap vs width:  " + "  ".join(parts))
        lines.append(
            "(theory: analytic-kernel gap ~ width^-1/2, empirical-kernel gap ~ width^-1; widths whose "
            "real run or prediction diverged are left out)"
        )
        if self.settings.get("twin"):
            s = self.settings
            batch = f"batches of {s['batch_size']}" if s.get("batch_size") else "full batch"
            lines.append(
                f"training: {s.get('dynamics')}, {s.get('loss_function', 'mse')} loss, {batch}; twin: {s['twin']}"
                + ("; gaps on the logits, / RMS(f_real - f_0)" if ce else "")
            )
        lines.extend(self._timing_notes())
        lines.extend(self.notes())
        if self.state != "complete":
            lines.append(
                f"{self.state}: only the widths above finished"
                + (f" ({', '.join(map(str, self.widths_pending))} not run)" if self.widths_pending else "")
            )
        return "\n".join(lines)

    def _timing_notes(self) -> List[str]:
        """The footnote of the ``speedup*`` column and the whole sweep's speedup, the one-off counted once."""
        s = self.settings
        one_off = s.get("time_analytic_kernels")
        analytic = any(r.get("time_predict_analytic") is not None for r in self.rows)
        out = [
            "* speedup = t_train / t_pred of that width; t_pred is its own prediction cost ("
            + ("analytic NTK: its f_0 and trajectory)" if analytic else "its empirical NTKs and trajectory)")
        ]
        if one_off is not None:
            out.append(
                f"  the analytic kernels and their decomposition, made once and shared by all widths, took "
                f"{one_off:.3f} s: they are in no width's t_pred, and counted once, in the whole sweep below"
            )
        done = [r for r in self.rows if r.get("time_predict") is not None]
        if done:
            t_train = sum(r["time_train"] for r in done)
            t_pred = sum(r["time_predict"] for r in done) + (one_off or 0.0)
            out.append(
                f"whole sweep: training {t_train:.2f} s, predicting {t_pred:.3f} s"
                f"{' (one-off included)' if one_off is not None else ''}: {_fmt_speedup(t_train / t_pred)}"
            )
        return out

    def notes(self) -> List[str]:
        """One line per thing that went wrong: diverged runs and predictions (each message once)."""
        out, seen = [], set()
        for r in self.rows:
            for key in ("message_analytic", "message_empirical", "message"):
                msg = r.get(key)
                if not msg:
                    continue
                shared = key == "message_analytic"  # one kernel for every width: the same message
                line = msg if shared else f"width {r['width']}: {msg}"
                if line not in seen:
                    seen.add(line)
                    out.append(line)
        return out


def _fmt_opt(v, fmt):
    return "-" if v is None else fmt.format(v)


def _fmt_speedup(v: float) -> str:
    """Two significant digits below 10 (so 0.04x never prints as 0x), whole numbers above."""
    if v >= 10:
        return f"{v:.0f}x"
    if v >= 1:
        return f"{v:.1f}x"
    return f"{v:.2g}x"


def _prediction_of(gap_key: str) -> str:
    return gap_key.rsplit("_", 1)[1]


def _loglog_slope(rows, key):
    """``(slope, widths used)``: rows whose real run diverged or whose prediction is not ok are left out."""
    pred = _prediction_of(key)
    pts = [(r["width"], r.get(key)) for r in rows if not r.get("diverged") and r.get(f"status_{pred}", "ok") == "ok"]
    pts = [(w, g) for w, g in pts if g is not None and np.isfinite(g) and g > 0]
    ws = [int(w) for w, _ in pts]
    if len(set(ws)) < 2:
        return None, ws
    lw = np.log([w for w, _ in pts])
    lg = np.log([g for _, g in pts])
    return float(np.polyfit(lw, lg, 1)[0]), ws


def _jsonable(obj):
    """Convert numpy scalars/arrays and non-finite floats (to ``None``) for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _rel_rmse(a: np.ndarray, b: np.ndarray, rms_target: float) -> Optional[float]:
    """``sqrt(mean((a - b)^2)) / rms_target`` over every recorded step, point and output.

    Scaled by the largest difference first, so finite outputs give a finite gap (no overflow of
    the squares); ``None`` only for non-finite outputs, which the prediction's status reports."""
    with np.errstate(over="ignore", invalid="ignore"):
        diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        m = float(np.max(np.abs(diff))) if diff.size else 0.0
        if not np.isfinite(m):
            return None
        if m == 0.0:
            return 0.0
        v = m * float(np.sqrt(np.mean((diff / m) ** 2))) / rms_target
    return v if np.isfinite(v) else None


def _prediction_status(what: str, lr: float, crit: float, kernel: str, *outputs):
    """``("ok" | "diverges" | "non-finite", message)`` of one prediction.

    At or above the critical rate the closed form's top mode is multiplied by ``|1 - lr lambda/(Nk)| >= 1``
    at every step: the linearised network diverges, whatever the real one does."""
    if lr >= crit:
        return "diverges", (
            f"the {what} prediction diverges: learning rate {lr:.4g} >= the critical rate 2Nk/lambda_max = "
            f"{crit:.4g} of {kernel} ({lr / crit:.3f}x), where the linearised network grows without bound; left "
            f"out of the gaps and slopes (the real network, whose kernel moves, may still train; below {crit:.4g} "
            "the prediction converges)"
        )
    with np.errstate(invalid="ignore"):
        finite = all(o is None or bool(np.all(np.isfinite(o))) for o in outputs)
    if not finite:
        return "non-finite", (
            f"the {what} prediction has non-finite values (its kernel overflowed: are the inputs "
            "standardised?); its gaps are left out"
        )
    return "ok", ""


def _record_results(row: dict, traj: dict, res, predictions: dict, scales, ce: bool) -> None:
    """Fill a width's row and trajectory from its real run ``res`` (a TrainingResult) and its
    ``predictions`` (``{"empirical": Prediction, "analytic": Prediction}`` of :mod:`ntksolve.twins`).

    ``scales`` are the gaps' denominators on train and test (``RMS(y)``, or for cross-entropy
    ``RMS(f_real - f_0)``). A diverged real run or a prediction that is not ``"ok"`` leaves
    ``None``, never NaN."""
    final_keys = (
        "loss_train_final_real",
        "loss_test_final_real",
        "loss_train_final_empirical",
        "loss_test_final_empirical",
        "loss_train_final_analytic",
        "loss_test_final_analytic",
        "test_loss_rel_error_empirical",
        "test_loss_rel_error_analytic",
    ) + (CE_KEYS if ce else ())
    if res.diverged:
        for key in GAP_KEYS + final_keys + ("kernel_change_final", "kernel_change_max"):
            row[key] = None
        traj["steps"] = res.steps.tolist()
        traj["loss_train_real"] = res.loss_train.tolist()
        traj["loss_test_real"] = res.loss_test.tolist()
        return
    row["loss_train_final_real"] = float(res.loss_train[-1])
    row["loss_test_final_real"] = float(res.loss_test[-1])
    traj.update(loss_train_real=res.loss_train, loss_test_real=res.loss_test, kernel_change=res.kernel_change)
    if ce:
        row["accuracy_train_final_real"] = float(res.accuracy_train[-1])
        row["accuracy_test_final_real"] = float(res.accuracy_test[-1])
        traj.update(accuracy_train_real=res.accuracy_train, accuracy_test_real=res.accuracy_test)
    for pred, P in predictions.items():
        if P.status != "ok":
            for key in (
                f"gap_train_{pred}",
                f"gap_test_{pred}",
                f"loss_train_final_{pred}",
                f"loss_test_final_{pred}",
                f"test_loss_rel_error_{pred}",
            ) + ((f"accuracy_test_final_{pred}", f"accuracy_test_diff_{pred}") if ce else ()):
                row[key] = None
            traj[f"loss_train_{pred}"] = traj[f"loss_test_{pred}"] = None
            continue
        row[f"gap_train_{pred}"] = _rel_rmse(res.fx_train, P.train, scales[0])
        row[f"gap_test_{pred}"] = _rel_rmse(res.fx_test, P.test, scales[1])
        row[f"loss_train_final_{pred}"] = float(P.loss_train[-1])
        row[f"loss_test_final_{pred}"] = float(P.loss_test[-1])
        row[f"test_loss_rel_error_{pred}"] = abs(float(P.loss_test[-1]) / float(res.loss_test[-1]) - 1.0)
        traj[f"loss_train_{pred}"], traj[f"loss_test_{pred}"] = P.loss_train, P.loss_test
        if ce:
            row[f"accuracy_test_final_{pred}"] = float(P.accuracy_test[-1])
            row[f"accuracy_test_diff_{pred}"] = float(P.accuracy_test[-1]) - float(res.accuracy_test[-1])
            traj[f"accuracy_train_{pred}"], traj[f"accuracy_test_{pred}"] = P.accuracy_train, P.accuracy_test
        if P.flow_time is not None:
            traj[f"flow_time_{pred}"] = P.flow_time
    row["kernel_change_final"] = float(res.kernel_change[-1])
    row["kernel_change_max"] = float(np.max(res.kernel_change))


def _sweep_totals(report: CompareReport, t_sweep: float) -> None:
    """Record the sweep's time so far and its training / prediction totals in ``report.settings``.

    ``time_predict_total = time_analytic_kernels`` (the one-off, made once for every width; absent
    without the analytic prediction) ``+ time_predict_per_width_total`` (the sum of the rows'
    ``time_predict``), and ``speedup_sweep = time_train_total / time_predict_total``."""
    s = report.settings
    s["time_sweep"] = time.perf_counter() - t_sweep
    done = [r for r in report.rows if r.get("time_predict") is not None]
    if done:
        t_train = sum(r["time_train"] for r in done)
        per_width = sum(r["time_predict"] for r in done)
        t_pred = per_width + (s.get("time_analytic_kernels") or 0.0)
        s["time_train_total"] = t_train
        s["time_predict_per_width_total"] = per_width
        s["time_predict_total"] = t_pred
        s["speedup_sweep"] = t_train / t_pred if t_pred > 0 else None


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def environment() -> dict:
    """Versions of ntksolve, Python and the numerical libraries, and the BLAS in use.

    ``blas`` is threadpoolctl's description of each BLAS/OpenMP library loaded (name, version,
    threads in effect, architecture), or numpy's build configuration without threadpoolctl."""
    import numba
    import scipy

    import ntksolve

    versions = {
        "ntksolve": ntksolve.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
    }
    for dist in ("scikit-learn", "threadpoolctl"):
        try:  # the distribution's metadata: importing scikit-learn itself would take longer than the report
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    blas = None
    try:
        from threadpoolctl import threadpool_info

        keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "prefix")
        blas = [{k: info.get(k) for k in keys if k in info} for info in threadpool_info()]
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        except Exception:  # noqa: BLE001 - old numpy: no machine-readable configuration
            blas = None
    return {"versions": versions, "platform": platform.platform(), "blas": blas}


__all__ = ["CompareReport", "environment", "GAP_KEYS", "SLOPE_KEYS", "STATES"]

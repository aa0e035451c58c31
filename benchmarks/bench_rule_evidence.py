"""Evidence that real networks follow their linear twins under the training rules people use.

For each rule, one width sweep of ``ntksolve.compare``. Each sweep uses one hidden ReLU layer in NTK
parameterisation, at half of that rule's own critical rate. The embedded regression data set is used
for MSE and scikit-learn's bundled digits for cross-entropy. Printed per rule:

- the empirical twin's test gap at the widest width;
- the relative error of the predicted final test loss against the real one;
- the log-log slope of the gap against width;
- the training and prediction times.

It also draws ``docs/figures/rules_gap_vs_width.png``, one panel per rule.

    PYTHONPATH=. python benchmarks/bench_rule_evidence.py            # widths 256..4096, as in the README
    PYTHONPATH=. python benchmarks/bench_rule_evidence.py --quick    # widths 64..512
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ntksolve import GradientDescent, Schedule, compare
from ntksolve.datasets import default_regression
from ntksolve.digits import load_digits_split


def rules(steps):
    """(name, compare keywords, loss, batch size, fraction of the rule's own critical rate).

    Momentum 0.9 at 0.025 of its critical rate ``2(1 + μ)Nk/λ_max`` has the effective rate
    ``η/(1 − μ)`` = 0.475 of the plain critical rate, about the plain run's 0.5; minibatch noise
    diverges below the full-batch critical rate, so the minibatch run takes 0.25 of it."""
    return [
        ("plain GD", dict(dynamics=None), "mse", None, 0.5),
        ("momentum 0.9", dict(dynamics=GradientDescent(1.0, momentum=0.9)), "mse", None, 0.025),
        ("Nesterov 0.9", dict(dynamics=GradientDescent(1.0, momentum=0.9, nesterov=True)), "mse", None, 0.025),
        ("cosine schedule", dict(dynamics=GradientDescent(Schedule.cosine(1.0, steps))), "mse", None, 0.5),
        ("weight decay 1e-4", dict(dynamics=GradientDescent(1.0, weight_decay=1e-4)), "mse", None, 0.5),
        ("minibatch 32", dict(dynamics=None), "mse", 32, 0.25),
        ("cross-entropy, digits", dict(dynamics=None), "cross_entropy", None, 0.5),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--figure", default=os.path.join("docs", "figures", "rules_gap_vs_width.png"))
    args = ap.parse_args()
    widths = [64, 128, 256, 512] if args.quick else [256, 512, 1024, 2048, 4096]
    reg = default_regression(n_train=256, n_test=256)
    dig = load_digits_split(n_rows=400, random_state=0)
    results = []
    for name, kw, loss, batch, frac in rules(args.steps):
        if loss == "mse":
            X, y, Xt, yt = reg.X_train, reg.y_train, reg.X_test, reg.y_test
        else:
            X, Xt = dig.X_train, dig.X_test
            y, yt = dig.labels_train, dig.labels_test
        t0 = time.perf_counter()
        rep = compare(
            X,
            y,
            widths,
            X_test=Xt,
            y_test=yt,
            loss=loss,
            batch_size=batch,
            lr_fraction=frac,
            steps=args.steps,
            progress=False,
            **kw,
        )
        wall = time.perf_counter() - t0
        rows = rep.rows
        gaps = [r.get("gap_test_empirical") for r in rows]
        slope = rep.slopes()["slope_test_empirical"]
        last = rows[-1]
        results.append((name, widths, gaps, rep.slopes()["slope_test_analytic"], slope, last, wall, rep))
        t_train = sum(r["time_train"] for r in rows)
        t_pred = sum(r["time_predict_empirical"] for r in rows)
        print(
            f"{name:24s} gap@{widths[-1]} {last.get('gap_test_empirical'):.3g}  final test loss rel. err. "
            f"{last.get('test_loss_rel_error_empirical'):.3%}  slope {slope:+.2f}  "
            f"kernel change {last.get('kernel_change_final'):.3g}  train {t_train:.1f} s  predict {t_pred:.2f} s  "
            f"(sweep {wall:.0f} s)",
            flush=True,
        )

    print(
        "\n| rule | test gap at width %d | final test loss, predicted vs real | slope of the gap | kernel change |"
        % widths[-1]
    )
    print("|---|---|---|---|---|")
    for name, _, _, _, slope, last, _, _ in results:
        print(
            f"| {name} | {last['gap_test_empirical']:.2e} | {last['test_loss_rel_error_empirical']:.2%} | "
            f"{slope:+.2f} | {last['kernel_change_final']:.2%} |"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = 4
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(2.6 * cols, 2.3 * rows_), sharey=True, constrained_layout=True)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.axis("off")
    for ax, (name, ws, gaps, _, slope, _, _, rep) in zip(axes, results):
        w = np.array([r["width"] for r in rep.rows], dtype=float)
        g = np.array([np.nan if r.get("gap_test_empirical") is None else r["gap_test_empirical"] for r in rep.rows])
        ax.loglog(w, g, "o-", color="C0", label="empirical twin")
        ga = [r.get("gap_test_analytic") for r in rep.rows]
        if any(v is not None for v in ga):
            ax.loglog(w, [np.nan if v is None else v for v in ga], "s--", color="C1", label="analytic twin")
        ref = g[0] * (w / w[0]) ** -1.0  # the 1/width of the linearisation error
        ax.loglog(w, ref, ":", color="0.5", label="∝ 1/width")
        ax.set_title(f"{name}\nslope {slope:+.2f}", fontsize=8)
        ax.set_xlabel("width", fontsize=8)
        ax.set_xticks(w, [str(int(v)) for v in w], minor=False)
        ax.set_xticks([], minor=True)
        ax.tick_params(labelsize=6)
    for r in range(rows_):
        axes[r * cols].set_ylabel("test gap, real vs predicted", fontsize=8)
    axes[0].legend(fontsize=6, loc="lower left")
    os.makedirs(os.path.dirname(args.figure) or ".", exist_ok=True)
    fig.savefig(args.figure, dpi=130)
    print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()

"""Benchmark of ``NTKClassifier(loss="log_loss")``: accuracy beside the squared loss, and the cost of a trajectory.

Run: ``python benchmarks/bench_cross_entropy.py`` (under a minute on two shared cores).

(a) Accuracy on digits (1000 training points, inputs / 16, the rest as test): cross-entropy after
    300 and 1000 steps at rate 20 against the squared-loss classifier at ``t = inf`` and
    scikit-learn's ``LogisticRegression`` on the pixels.

(b) Speed of ``predict_proba_trajectory`` (7 recorded times of ``S = 300`` steps) against the
    test kernel and the recurrence driven by hand with it inside (``sgd_cross_entropy(...,
    k_test_train=Ks)``, cost ``O(S (N + M) N k)``), for test sets smaller and larger than the
    training set; and against asking ``predict_proba`` once per time (a run per time).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ntksolve import NTKClassifier
from ntksolve.dynamics import GradientDescent
from ntksolve.dynamics.function_space import sgd_cross_entropy


def _best_of(fn, repeat=2):
    """Least wall time of ``repeat`` runs (the machine is shared; the minimum is the least noisy)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = X[idx] / 16.0, y[idx]
    Xtr, ytr, Xte, yte = X[:1000], y[:1000], X[1000:], y[1000:]
    print("(a) accuracy on digits, N = 1000, M =", len(yte))
    for steps in (300, 1000):
        clf = NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=20.0, time=steps).fit(Xtr, ytr)
        print(f"    log_loss, {steps:4d} steps      {clf.score(Xte, yte):.3f}")
    print(f"    squared_error, t = inf      {NTKClassifier().fit(Xtr, ytr).score(Xte, yte):.3f}")
    print(f"    LogisticRegression          {LogisticRegression(max_iter=3000).fit(Xtr, ytr).score(Xte, yte):.3f}")

    N, S = 300, 300
    times = np.linspace(0, S, 7).astype(int)
    clf = NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=20.0, time=S).fit(X[:N], y[:N])
    print(f"(b) trajectory of {times.size} recorded times, S = {S} steps, N = {N}")
    for M in (100, 300, 1200):
        Xt = X[N : N + M]

        def estimator():
            clf.predictor_._last = None  # no kept run: each call pays its recurrence
            clf.predict_proba_trajectory(Xt, times)

        def by_hand():  # the same test kernel, then the recurrence carrying it
            Ks = clf._kernel(clf._validated_X(Xt), clf.X_train_)
            sgd_cross_entropy(
                clf.predictor_.kernel,
                y[:N],
                np.zeros((N, 10)),
                times,
                dynamics=GradientDescent(20.0),
                k_test_train=Ks,
                fx_test_0=np.zeros((M, 10)),
            )

        def per_time():
            for t in times:
                clf.predictor_._last = None
                clf.set_params(time=int(t)).predict_proba(Xt)

        a, b, c = _best_of(estimator), _best_of(by_hand), _best_of(per_time)
        print(
            f"    M = {M:5d}: estimator {a:.3f}s   by hand {b:.3f}s (x{b / a:.2f})   "
            f"one call per time {c:.3f}s (x{c / a:.2f})"
        )


if __name__ == "__main__":
    main()

"""Predict a training run or run it: the linearised twin (kernel + recurrence) beside real training.

Two runs, each timed once (a run of minutes is not repeated on a shared machine; the ratio is what
counts), with the twin's agreement printed beside its speed so that speed never hides a wrong answer:

1. **Minibatch MSE.** The embedded regression (``default_regression``: ``N = 1024``, 256 test
   points, ``d = 8``), ``Linear, ReLU, Linear, ReLU, Linear`` of width 4096 with PyTorch's own
   initialisation in float64, 2000 steps of ``torch.optim.SGD`` on ``MSELoss`` at 0.3 of the
   critical rate, shuffled batches of 32 (the same order for both), outputs recorded at 11 steps.

   - twin: ``from_torch``; the module's empirical NTK, traced (``k = 1``), train–train and
     test–train (from one kernel of both sets); ``f_0``; ``λ_max`` (for the rate); ``sgd_mse`` over
     the 2000 batches.
   - real: ``ntksolve.torch.train`` (PyTorch's optimiser), and ``ntksolve.train_network`` once it
     takes ``batches=`` and ``dynamics=``. Target: the twin at least 50 times faster.

2. **Full-batch cross-entropy.** scikit-learn's digits (1347 train / 450 test, a stratified split
   standardised by its training part), ``k = 10``, one hidden ReLU layer of width 4096 built by ntksolve in standard
   parameterisation (Gaussian weights, ``weight_std = 1``, ``bias_std = 1/sqrt(d)``) and exported
   by ``to_torch``, 500 steps of ``torch.optim.SGD`` on ``CrossEntropyLoss`` at ``N/λ_max``.

   - twin "full": the module's full empirical kernel, ``Nk × Nk`` (13 470², 1.45 GB), exact for the
     linearised module: computing it and every step's product are each about one training run;
   - twin "traced": its traced empirical kernel ``Θ̄`` used as ``Θ̄ ⊗ I_k``;
   - twin "analytic": the infinite-width kernel of the same network, ``Θ∞ ⊗ I_k``. In standard
     parameterisation it grows with the width ``n``: with ``(K, Θ)`` the analytic NNGP and NTK of
     the NTK-parameterised twin (the same ``σ_w = 1``, ``σ_b² = 1/d``), the readout contributes
     ``n (K − σ_b²) + 1`` (``⟨h, h'⟩ + 1`` over ``n`` units) and the hidden layer ``d (Θ − K)``
     (``Σ_j v_j² φ'φ' (⟨x, x'⟩ + 1)``, from the analytic NTK's hidden-layer term ``E[φ'φ'] Σ¹``).
   - real: ``ntksolve.torch.train``, and ``train_network(loss="cross_entropy")`` once it exists.
     Target: the twin at least 20 times faster.

Usage::

    python benchmarks/bench_twins.py            # the sizes above (several minutes, about 6 GB for "full")
    python benchmarks/bench_twins.py --quick    # N = 256 / 300, width 1024, fewer steps
    python benchmarks/bench_twins.py --no-full  # skip the full Nk x Nk kernel
    python benchmarks/bench_twins.py --threads 1  # one thread for torch, BLAS and numba
"""

from __future__ import annotations

import argparse
import functools
import inspect
import time

import numpy as np
import torch
from torch import nn

from ntksolve import MLP, analytic_kernels, critical_learning_rate, empirical_ntk
from ntksolve.datasets import default_regression
from ntksolve.digits import load_digits_split
from ntksolve.dynamics import GradientDescent
from ntksolve.dynamics.function_space import sgd_cross_entropy, sgd_mse, shuffled_batches
from ntksolve.torch import from_torch, learning_rate_from_torch, to_torch, train
from ntksolve.training import train_network


def _takes(*names):
    return all(n in inspect.signature(train_network).parameters for n in names)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _real_torch(module, X, y, rate, loss, batch, **run):
    """``ntksolve.torch.train`` with ``torch.optim.SGD`` at ``rate`` (ntksolve's units, for batches of
    ``batch = (n_samples, n_outputs)``), timed."""
    lr = rate / learning_rate_from_torch(1.0, loss=loss, n_samples=batch[0], n_outputs=batch[1])
    sgd = functools.partial(torch.optim.SGD, lr=lr)
    return _timed(lambda: train(module, X, y, optimizer=sgd, loss=loss, track_kernel=False, **run))


def _real_own(net, params, X, y, rate, **run):
    """``ntksolve.train_network`` by gradient descent at ``rate``, timed."""
    return _timed(lambda: train_network(net, params, X, y, dynamics=GradientDescent(rate), track_kernel=False, **run))


def _traced_kernels(net, params, X, X_test):
    """Train–train and test–train traced NTKs from one kernel of both sets: every input's forward and
    backward pass once (``empirical_ntk(X_test, X)`` would recompute those of ``X``); the same numbers."""
    n = X.shape[0]
    both = empirical_ntk(net, params, np.concatenate([X, X_test]))
    return both[:n, :n].copy(), both[n:, :n].copy()


def _gap(real, twin, start):
    """RMS of real − twin over the recorded test outputs, relative to the RMS of the twin's movement."""
    return float(np.sqrt(np.mean((real - twin) ** 2) / np.mean((twin - start) ** 2)))


def _table(twins, trainers, target):
    """Seconds of every twin and trainer, and each trainer's time over each twin's (target: ``target``)."""
    names = list(trainers)
    print(f"  {'':<56} {'seconds':>9}  " + "  ".join(f"{'/ twin (' + str(i + 1) + ')':>11}" for i in range(len(names))))
    for i, (what, t) in enumerate(trainers.items()):
        print(f"  ({i + 1}) real: {what:<46} {t:9.2f}")
    for what, (t, note) in twins.items():
        ratios = "  ".join(f"{trainers[n] / t:10.1f}x" for n in names)
        print(f"  twin: {what:<50} {t:9.2f}  {ratios}  {note}")
    print(f"  target: real / twin >= {target}x")


def minibatch_mse(n_train, width, steps, depth=2, batch=32, n_test=256):
    data = default_regression(n_train=n_train, n_test=n_test)
    X, y, Xt, yt = data.X_train, data.y_train, data.X_test, data.y_test
    torch.manual_seed(0)
    layers, d = [], X.shape[1]
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    module = nn.Sequential(*layers, nn.Linear(d, 1)).double()
    batches = shuffled_batches(n_train, batch, steps, random_state=0)
    record = np.linspace(0, steps, 11).astype(np.int64)
    loss = nn.MSELoss()
    print(
        f"\n1. minibatch MSE: N = {n_train} (+{n_test} test), d = {X.shape[1]}, {depth} hidden ReLU layers of "
        f"{width}, PyTorch init, float64; {steps} steps, batches of {batch}; outputs at {record.size} steps"
    )

    def predict():
        net, params = from_torch(module)
        theta, theta_test = _traced_kernels(net, params, X, Xt)
        f0, f0_test = net.apply(params, X), net.apply(params, Xt)
        rate = 0.3 * critical_learning_rate(theta)
        test = dict(k_test_train=theta_test, fx_test_0=f0_test)
        traj = sgd_mse(theta, y, f0, record, dynamics=GradientDescent(rate), batches=batches, **test)
        return rate, f0_test, traj

    t_pred, (rate, f0_test, traj) = _timed(predict)
    t_torch, real = _real_torch(
        module, X, y, rate, loss, (batch, 1), steps=steps, batches=batches, record_at=record, X_test=Xt
    )
    twin_loss = float(np.mean((traj.test[-1] - yt) ** 2))
    real_loss = float(np.mean((real.fx_test[-1] - yt) ** 2))
    print(
        f"  test MSE {float(np.mean((f0_test - yt) ** 2)):.4f} -> real {real_loss:.4f}, twin {twin_loss:.4f} "
        f"({abs(real_loss / twin_loss - 1):.1e} apart); output gap {_gap(real.fx_test, traj.test, f0_test):.1e}"
    )
    trainers = {f"ntksolve.torch.train (torch, {torch.get_num_threads()} threads)": t_torch}
    if _takes("batches", "dynamics"):
        net, params = from_torch(module)
        t_own, own = _real_own(net, params, X, y, rate, steps=steps, batches=batches, record_at=record, X_test=Xt)
        trainers["ntksolve.train_network"] = t_own
        print(f"  train_network: test MSE {float(np.mean((own.fx_test[-1] - yt) ** 2)):.4f}")
    else:
        print("  ntksolve.train_network does not take batches= and dynamics= yet: not timed")
    _table({"empirical NTK (traced) + lambda_max + sgd_mse": (t_pred, "")}, trainers, 50)


def _digits(n_train, n_test):
    """A stratified split of the digits, standardised by its training part (:func:`load_digits_split`)."""
    data = load_digits_split(test_size=n_test / (n_train + n_test), n_rows=n_train + n_test)
    return data.X_train, data.labels_train, data.X_test, data.labels_test


def _sp_limit(width, d, X1, X2=None):
    """``Θ∞`` of the standard-parameterised network of width ``width`` (``σ_w = 1``, ``σ_b² = 1/d``)."""
    K, T = analytic_kernels(MLP((width,), "relu", weight_std=1.0, bias_std=d**-0.5), X1, X2)
    return width * (K - 1.0 / d) + 1.0 + d * (T - K)


def cross_entropy(n_train, n_test, width, steps, full):
    X, y, Xt, yt = _digits(n_train, n_test)
    k, d = 10, X.shape[1]
    net = MLP((width,), "relu", weight_std=1.0, bias_std=d**-0.5, parameterization="standard", n_outputs=k)
    params = net.init(d, random_state=0)
    module = to_torch(net, params)
    record = np.linspace(0, steps, 11).astype(np.int64)
    loss = nn.CrossEntropyLoss()
    f0, f0_test = net.apply(params, X), net.apply(params, Xt)
    print(
        f"\n2. full-batch cross-entropy: digits, N = {n_train} (+{n_test} test), d = {d}, k = {k}, one hidden "
        f"ReLU layer of {width} (ntksolve init, standard parameterisation), float64; {steps} steps"
    )

    def twin(kernel, kernel_test, rate=None):
        if rate is None:  # cross-entropy's step is (η/N) Θ (softmax(f) − Y): 2N/λ_max bounds it (curvature ≤ 1/2)
            rate = 0.5 * critical_learning_rate(kernel)
        traj = sgd_cross_entropy(
            kernel,
            y,
            f0,
            record,
            dynamics=GradientDescent(rate),
            k_test_train=kernel_test,
            fx_test_0=f0_test,
            targets_test=yt,
        )
        return rate, traj

    # every twin and the real network run at the rate the analytic kernel gives, so that the real
    # network is trained once (the empirical kernels' λ_max differ from it by their fluctuation)
    twins = {}
    t_ana, (rate, traj) = _timed(lambda: twin(_sp_limit(width, d, X), _sp_limit(width, d, Xt, X)))
    traced = empirical_ntk(net, params, X)
    print(
        f"  Theta_inf against the traced empirical kernel: {np.linalg.norm(_sp_limit(width, d, X) - traced) / np.linalg.norm(traced):.1e} "
        "relative (Frobenius)"
    )
    del traced
    twins["analytic Theta_inf (x) I_k + recurrence"] = (t_ana, traj)
    t_tr, (_, traj) = _timed(lambda: twin(*_traced_kernels(net, params, X, Xt), rate))
    twins["traced empirical (x) I_k + recurrence"] = (t_tr, traj)
    if full:
        t_k, (th, ths) = _timed(
            lambda: (empirical_ntk(net, params, X, trace=False), empirical_ntk(net, params, Xt, X, trace=False))
        )
        t_r, (_, traj) = _timed(lambda: twin(th, ths, rate))
        del th, ths
        twins[f"full empirical {n_train * k}^2 ({t_k:.0f} s) + recurrence ({t_r:.0f} s)"] = (t_k + t_r, traj)
    t_torch, real = _real_torch(
        module, X, y, rate, loss, (n_train, k), steps=steps, record_at=record, X_test=Xt, y_test=yt
    )
    acc = float(np.mean(np.argmax(real.fx_test[-1], axis=1) == yt))
    print(f"  real: test cross-entropy {real.loss_test[0]:.3f} -> {real.loss_test[-1]:.4f}, accuracy {acc:.3f}")
    trainers = {f"ntksolve.torch.train (torch, {torch.get_num_threads()} threads)": t_torch}
    if _takes("loss", "dynamics"):
        own_run = dict(steps=steps, loss="cross_entropy", record_at=record, X_test=Xt, y_test=yt)
        t_own, own = _real_own(net, params, X, y, rate, **own_run)
        trainers["ntksolve.train_network"] = t_own
        print(f"  train_network: test cross-entropy {own.loss_test[-1]:.4f}")
    else:
        print("  ntksolve.train_network does not take loss='cross_entropy' yet: not timed")
    print("  each twin: final test cross-entropy (apart from the real one), accuracy, output gap")
    _table(
        {
            name: (
                t,
                f"{traj.test_loss[-1]:.4f} ({abs(real.loss_test[-1] / traj.test_loss[-1] - 1):.1e}), "
                f"{traj.test_accuracy[-1]:.3f}, {_gap(real.fx_test, traj.test, f0_test):.1e}",
            )
            for name, (t, traj) in twins.items()
        },
        trainers,
        20,
    )


def _warm_up():
    """Compile (or load from numba's cache) every jitted path once, outside the timings."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    for k, param in ((1, "ntk"), (3, "standard")):
        net = MLP((4,), "relu", bias_std=0.5, parameterization=param, n_outputs=k)
        p = net.init(3, random_state=0)
        for trace in (True, False):
            empirical_ntk(net, p, X, trace=trace), empirical_ntk(net, p, X[:2], X, trace=trace)
    analytic_kernels(MLP((4,), "relu", bias_std=0.5), X), analytic_kernels(MLP((4,), "relu", bias_std=0.5), X[:2], X)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: N = 256 / 300, width 1024, fewer steps")
    ap.add_argument("--no-full", action="store_true", help="skip the full Nk x Nk empirical kernel twin")
    ap.add_argument("--threads", type=int, default=None, help="limit torch, BLAS and numba threads")
    a = ap.parse_args()
    if a.threads:
        import numba
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
        numba.set_num_threads(a.threads)
        torch.set_num_threads(a.threads)
    _warm_up()
    if a.quick:
        minibatch_mse(256, 1024, 500)
        cross_entropy(300, 100, 1024, 100, full=not a.no_full)
    else:
        minibatch_mse(1024, 4096, 2000)
        cross_entropy(1347, 450, 4096, 500, full=not a.no_full)


if __name__ == "__main__":
    main()

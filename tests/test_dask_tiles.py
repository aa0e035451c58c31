"""Tiled kernels on Dask, the tiled operator and the tiled solvers (the Zarr store: test_dask_store.py).

Everything that runs on a cluster uses one ``LocalCluster`` of two worker processes of one thread
each. The references are independent of the tiled code: the in-memory kernels of
``ntksolve.kernels`` and a closed form by ``numpy.linalg.eigh`` written out here from
``docs/conventions.md``.
"""

import os
import signal
import socket
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

import ntksolve  # noqa: E402
import ntksolve.dask as D  # noqa: E402
from ntksolve.dask.runner import _limit_task_threads, _Runner  # noqa: E402
from ntksolve._jit.tiles import symmetric_tile_products, tile_products  # noqa: E402
from ntksolve.dynamics import ConjugateGradient, Krylov, Nystrom  # noqa: E402


from dask_support import _data, _rel, client  # noqa: E402,F401  (client is a fixture)


NET = ntksolve.MLP((512, 512), activation="relu", bias_std=0.1)


# ---------------------------------------------------------------------------------------------
# tiled kernels equal the in-memory ones
# ---------------------------------------------------------------------------------------------
def test_analytic_tiles_equal_in_memory(client):
    X, _ = _data(700)
    Xt, _ = _data(300, seed=1)
    ref = ntksolve.analytic_kernels(NET, X)
    k = D.analytic_kernels(NET, X, chunks=256)
    assert k.ntk.chunks == ((256, 256, 188), (256, 256, 188))
    # both kernels in one compute share the tile tasks: one task per upper tile computes both
    nngp, ntk = client.compute([k.nngp, k.ntk], sync=True)
    assert _rel(ntk, ref.ntk) <= 1e-13 and _rel(nngp, ref.nngp) <= 1e-13
    np.testing.assert_array_equal(ntk, ntk.T)
    ref_x = ntksolve.analytic_kernels(NET, Xt, X)
    kx = D.analytic_kernels(NET, Xt, X, chunks=([100, 100, 100], [300, 400]))
    assert _rel(client.compute(kx.ntk, sync=True), ref_x.ntk) <= 1e-13


def test_empirical_tiles_equal_in_memory(client):
    net = ntksolve.MLP((64, 32), activation="erf", bias_std=0.2, n_outputs=3)
    X, _ = _data(250)
    params = net.init(6, random_state=0)
    ref = ntksolve.empirical_ntk(net, params, X)
    tiled = D.empirical_ntk(net, params, X, chunks=64)
    assert _rel(client.compute(tiled, sync=True), ref) <= 1e-13
    ref_full = ntksolve.empirical_ntk(net, params, X, trace=False)
    full = D.empirical_ntk(net, params, X, chunks=[100, 100, 50], trace=False)
    assert full.shape == (250, 250, 3, 3)
    assert _rel(client.compute(full, sync=True), ref_full) <= 1e-13
    # float32 parameters give a float32 kernel, as in memory
    p32 = net.init(6, random_state=0, dtype=np.float32)
    t32 = D.empirical_ntk(net, p32, X, chunks=100).compute(scheduler="threads")
    assert t32.dtype == np.float32
    assert _rel(t32, ntksolve.empirical_ntk(net, p32, X)) <= 1e-6


def test_tile_products_match_float64_blas():
    rng = np.random.default_rng(3)
    K = rng.standard_normal((300, 200)).astype(np.float32)
    Vi, Vj = rng.standard_normal((300, 2)), rng.standard_normal((200, 2))
    Ui, Uj = symmetric_tile_products(K, Vi, Vj)
    K64 = K.astype(np.float64)
    assert _rel(Ui, K64 @ Vj) <= 1e-14 and _rel(Uj, K64.T @ Vi) <= 1e-14
    assert _rel(tile_products(K64, Vj), K64 @ Vj) <= 1e-14


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def _probe_threads():
    import numba

    _limit_task_threads()
    return numba.get_num_threads(), _blas_threads()


def test_tasks_do_not_oversubscribe(client):
    X, _ = _data(200)
    client.compute(D.analytic_kernels(NET, X, chunks=100).ntk, sync=True)
    # after tile tasks ran, every worker's BLAS is down to its one thread, and a task sees one
    # numba thread
    for blas in client.run(_blas_threads).values():
        assert blas and all(n == 1 for n in blas)
    assert all(w["nthreads"] == 1 for w in client.scheduler_info()["workers"].values())
    numba_threads, blas = client.submit(_probe_threads, pure=False).result()
    assert numba_threads == 1 and all(n == 1 for n in blas)
    # the threaded scheduler: one numba and one BLAS thread per task while it computes
    with _Runner("threads") as runner:
        ((numba_threads, blas),) = runner.compute([dask.delayed(_probe_threads, pure=False)()])
    assert numba_threads == 1 and all(n == 1 for n in blas)


def test_synchronous_tasks_give_the_callers_thread_its_numba_threads_back():
    """Under scheduler="sync" the tasks run in the caller's thread: each sets one numba thread
    while it runs, and must not leave the caller's later in-memory kernels on one thread."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        X, y = _data(30)
        D.analytic_kernels(NET, X, chunks=8).ntk.compute(scheduler="sync")
        assert numba.get_num_threads() == 2
        fit = D.fit_tiled(NET, X, y, diag_reg=1e-2, chunks=8, scheduler="sync")  # tiles, Nystrom, CG
        fit.predict(X, scheduler="sync")  # streamed test tiles
        assert numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# tiled solvers match the eigh closed form
# ---------------------------------------------------------------------------------------------
def _eigh_reference(K, Kt, y, *, diag_reg, t, learning_rate=1.0):
    """docs/conventions.md closed form by eigh: (train, test) at time t (continuous), f_0 = 0."""
    N, k = y.shape
    A = K + diag_reg * np.mean(np.diag(K)) * np.eye(N)
    lam, V = np.linalg.eigh(A)
    P = V.T @ y
    if np.isinf(t):
        return y.copy(), Kt @ (V @ (P / lam[:, None]))
    s = learning_rate * t / (N * k)
    train = y - V @ (np.exp(-lam * s)[:, None] * P)
    test = Kt @ (V @ ((-np.expm1(-lam * s) / lam)[:, None] * P))
    return train, test


@pytest.fixture(scope="module")
def problem():
    X, y = _data(2000)
    Xt, _ = _data(500, seed=7)
    return X, y, Xt, ntksolve.analytic_kernels(NET, X).ntk, ntksolve.analytic_kernels(NET, Xt, X).ntk


def test_cg_matches_eigh_at_t_inf(client, problem):
    X, y, Xt, K, Kt = problem
    _, test_ref = _eigh_reference(K, Kt, y, diag_reg=1e-2, t=np.inf)
    fit = D.fit_tiled(
        NET,
        X,
        y,
        diag_reg=1e-2,
        chunks=700,
        scheduler=client,
        method=ConjugateGradient(tol=1e-10, preconditioner=Nystrom(300)),
    )
    assert fit.info["method"] == "cg" and fit.info["converged"]
    assert fit.info["residuals"].max() <= 1e-9
    assert _rel(fit.predict(Xt, scheduler=client), test_ref) <= 1e-8
    # t = inf on the train inputs: the targets. Not bitwise: the operator path returns
    # f_0 + A x with x the CG solution of A x = r (the dynamics' one formula for any kernel),
    # which is y to the CG residual, |A x - r| <= 1e-9 |r| per column here.
    np.testing.assert_allclose(fit.fx_train, y, rtol=0, atol=1e-9 * np.abs(y).max() * np.sqrt(len(y)))


def test_lanczos_matches_eigh_at_finite_t(client, problem):
    X, y, Xt, K, Kt = problem
    t, lr = 300.0, 2.0
    train_ref, test_ref = _eigh_reference(K, Kt, y, diag_reg=1e-4, t=t, learning_rate=lr)
    fit = D.fit_tiled(NET, X, y, t=t, learning_rate=lr, diag_reg=1e-4, chunks=700, scheduler=client)
    assert fit.info["method"] == "lanczos" and fit.info["converged"]
    assert _rel(fit.fx_train, train_ref) <= 1e-8
    assert _rel(fit.predict(Xt, scheduler=client), test_ref) <= 1e-8


def test_solvers_agree_with_dynamics_module_and_f0(problem):
    """Empirical kernel with f_0 != 0, discrete steps, threads scheduler: equal to dynamics' eigh path."""
    from ntksolve.dynamics import gradient_descent_mse

    net = ntksolve.MLP((128,), activation="erf", bias_std=0.3, n_outputs=2)
    X, y = _data(400, seed=2)
    Xt, _ = _data(100, seed=3)
    params = net.init(6, random_state=1)
    f0, f0t = net.apply(params, X), net.apply(params, Xt)
    K = ntksolve.empirical_ntk(net, params, X)
    Kt = ntksolve.empirical_ntk(net, params, Xt, X)
    pred = gradient_descent_mse(K, y, 1.0, diag_reg=1e-3, dynamics="discrete", method="eigh")
    train_ref, test_ref = pred(25, f0, f0t, Kt)
    fit = D.fit_tiled(
        net,
        X,
        y,
        params=params,
        t=25,
        diag_reg=1e-3,
        dynamics="discrete",
        fx_train_0=f0,
        chunks=128,
        scheduler="threads",
    )
    assert _rel(fit.fx_train, train_ref) <= 1e-8
    assert _rel(fit.predict(Xt, fx_test_0=f0t, scheduler="threads"), test_ref) <= 1e-8


def test_float32_tiles_are_the_rounded_kernel_applied_exactly(problem):
    X, y, *_ = problem
    X = X[:600]
    spec = D.KernelSpec(NET)
    with D.TiledKernelOperator(spec, X, chunks=256, dtype=np.float32, scheduler="threads") as op:
        K32 = ntksolve.analytic_kernels(NET, X).ntk.astype(np.float32).astype(np.float64)
        V = np.random.default_rng(0).standard_normal((600, 3))
        assert _rel(op.matmat(V), K32 @ V) <= 1e-13
        assert _rel(op.as_linear_operator() @ V[:, 0], K32 @ V[:, 0]) <= 1e-13
        # the operator protocol of the solvers: shape, dtype, matmat, diagonal, and the streamed
        # test-side operator (computed in float64, not stored)
        assert op.shape == (600, 600) and op.dtype == np.float32
        np.testing.assert_array_equal(op.diagonal(), np.diag(K32))
        Xt = problem[2][:150]
        cross = op.cross(Xt, chunks=64)
        assert cross.shape == (150, 600) and cross.dtype == np.float64
        assert _rel(cross.matmat(V), ntksolve.analytic_kernels(NET, Xt, X).ntk @ V) <= 1e-13
        with pytest.raises(ValueError, match=r"V must have shape \(600,\)"):
            op.matmat(V[:5])


# ---------------------------------------------------------------------------------------------
# one dynamics: the tiled fit is gradient_descent_mse on the tiled operator
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    X, y = _data(240, seed=4)
    Xt, _ = _data(60, seed=5)
    return X, y, Xt, ntksolve.analytic_kernels(NET, X).ntk, ntksolve.analytic_kernels(NET, Xt, X).ntk


@pytest.mark.parametrize(
    "t, dynamics", [(30.0, "continuous"), (np.inf, "continuous"), (40, "discrete"), (np.inf, "discrete")]
)
def test_tiled_equals_in_memory_dynamics(small, t, dynamics):
    """The reference is the in-memory eigendecomposition path of ntksolve.dynamics (a second method)."""
    from ntksolve.dynamics import gradient_descent_mse

    X, y, Xt, K, Kt = small
    f0 = 0.1 * np.cos(X[:, :2])
    train_ref, test_ref = gradient_descent_mse(K, y, 3.0, diag_reg=1e-3, dynamics=dynamics, method="eigh")(
        t, f0, np.zeros((60, 2)), Kt
    )
    method = ConjugateGradient(tol=1e-12, preconditioner=Nystrom(100)) if np.isinf(t) else Krylov(tol=1e-12)
    fit = D.fit_tiled(
        NET,
        X,
        y,
        t=t,
        learning_rate=3.0,
        diag_reg=1e-3,
        dynamics=dynamics,
        fx_train_0=f0,
        chunks=100,
        scheduler="threads",
        method=method,
    )
    assert fit.info["method"] == ("cg" if np.isinf(t) else "lanczos") and fit.info["converged"]
    assert _rel(fit.fx_train, train_ref) <= 1e-8
    assert _rel(fit.predict(Xt, scheduler="threads"), test_ref) <= 1e-8


@pytest.mark.parametrize("factor", [2.0, 3.0])
def test_tiled_discrete_divergence_is_the_in_memory_error(small, factor):
    """Above the critical rate 2Nk/lambda_max the tiled fit refuses exactly as in memory (before,
    it returned |f| ~ 1e3 .. 1e34 silently); allow_divergence=True warns and computes the same."""
    from ntksolve.dynamics import DivergenceWarning, critical_learning_rate, gradient_descent_mse

    X, y, _, K, _ = small
    lr = factor * critical_learning_rate(K, 2)
    with pytest.raises(ValueError, match="critical learning rate") as mem:
        gradient_descent_mse(K, y, lr, dynamics="discrete")
    with pytest.raises(ValueError, match="critical learning rate") as tiled:
        D.fit_tiled(NET, X, y, t=50, learning_rate=lr, dynamics="discrete", chunks=100, scheduler="threads")
    assert str(tiled.value) == str(mem.value)
    with pytest.warns(DivergenceWarning, match="diverges"):
        fit = D.fit_tiled(
            NET,
            X,
            y,
            t=50,
            learning_rate=lr,
            dynamics="discrete",
            chunks=100,
            scheduler="threads",
            allow_divergence=True,
        )
    with pytest.warns(DivergenceWarning):
        ref = gradient_descent_mse(K, y, lr, dynamics="discrete", method="eigh", allow_divergence=True)(
            50, np.zeros_like(y)
        )
    assert np.abs(ref).max() > 1e10  # it does diverge
    assert _rel(fit.fx_train, ref) <= 1e-8


def test_t_inf_without_ridge_on_duplicated_rows_is_the_pseudo_inverse(small):
    """diag_reg = 0 and repeated inputs: a singular kernel. In memory eigh gives Theta* Theta^+ r (the
    minimum-norm interpolant); the tiled fit (default solver: Lanczos, null Ritz values dropped)
    gives the same within its tolerance, where it used to raise LinAlgError."""
    from ntksolve.dynamics import gradient_descent_mse

    X, y, Xt, *_ = small
    Xd = np.concatenate([X[:120], X[:120]])
    yd = np.random.default_rng(3).standard_normal((240, 2))  # inconsistent targets on the copies
    K, Kt = ntksolve.analytic_kernels(NET, Xd).ntk, ntksolve.analytic_kernels(NET, Xt, Xd).ntk
    train_ref, test_ref = gradient_descent_mse(K, yd, method="eigh")(np.inf, np.zeros_like(yd), np.zeros((60, 2)), Kt)
    fit = D.fit_tiled(NET, Xd, yd, chunks=100, scheduler="threads")
    assert fit.info["method"] == "lanczos" and fit.info["converged"]
    assert _rel(fit.fx_train, train_ref) <= 1e-8  # the mean of each pair of copies, not yd
    assert _rel(fit.fx_train[:120], (yd[:120] + yd[120:]) / 2) <= 1e-8
    assert _rel(fit.predict(Xt, scheduler="threads"), test_ref) <= 1e-8


def test_options_travel_with_the_solver_and_are_checked_before_tiles(small, monkeypatch):
    X, y, *_ = small
    monkeypatch.setattr(D.fit, "TiledKernelOperator", lambda *a, **k: pytest.fail("tiles built before the check"))
    with pytest.raises(TypeError, match="tol"):
        D.fit_tiled(NET, X, y, chunks=100, tol=1e-8)  # the old loose keyword: now ConjugateGradient(tol=...)
    with pytest.raises(ValueError, match="integer"):
        D.fit_tiled(NET, X, y, t=2.5, dynamics="discrete", chunks=100)
    with pytest.raises(ValueError, match="one time"):
        D.fit_tiled(NET, X, y, t=[1.0, 2.0], chunks=100)
    with pytest.raises(TypeError, match="method must be"):
        D.fit_tiled(NET, X, y, chunks=100, method=42)
    with pytest.raises(ValueError, match="diag_reg"):
        D.fit_tiled(NET, X, y, chunks=100, diag_reg=-1.0)
    # the estimators' method names: the dense-only ones are refused with chunks, naming the alternative
    from ntksolve.sklearn import _solve

    with pytest.raises(ValueError, match="method='eigh' decomposes.*use method='auto'"):
        _solve.fit_tiled(
            NET,
            X,
            y,
            params=None,
            t=np.inf,
            learning_rate=1.0,
            diag_reg=0.1,
            dynamics="continuous",
            fx_train_0=np.zeros_like(y),
            chunks=100,
            scheduler="sync",
            dtype=None,
            method="eigh",
        )


def test_targets_and_validation_inputs_are_checked_before_tiles(small, monkeypatch):
    """A wrong target is found before the train tiles (hours of work at scale), not after them."""
    from ntksolve.dask.fit import validation_path_tiled

    X, y, Xt, *_ = small
    N, k = y.shape
    monkeypatch.setattr(D.fit, "TiledKernelOperator", lambda *a, **k: pytest.fail("tiles built before the check"))
    fit = dict(chunks=100, scheduler="sync")
    with pytest.raises(ValueError, match=rf"y_train must have shape \({N},\) or \({N}, k\).*got \({N - 1}, {k}\)"):
        D.fit_tiled(NET, X, y[:-1], **fit)
    with pytest.raises(ValueError, match=r"y_train contains NaN"):
        D.fit_tiled(NET, X, np.where(np.arange(N)[:, None] == 3, np.nan, y), **fit)
    with pytest.raises(TypeError, match=r"y_train must be a numeric array"):
        D.fit_tiled(NET, X, np.full(N, "a"), **fit)
    with pytest.raises(ValueError, match=rf"fx_train_0 must have shape \({N}, {k}\)"):
        D.fit_tiled(NET, X, y, fx_train_0=np.zeros(N - 1), **fit)
    path = dict(times=[1.0, np.inf], diag_regs=[1e-3], chunks=100, scheduler="sync")
    with pytest.raises(ValueError, match=rf"y_train must have shape \({N}, k\)"):
        validation_path_tiled(NET, X, y[:, 0], Xt, **path)
    with pytest.raises(ValueError, match=r"X_valid has 5 features"):
        validation_path_tiled(NET, X, y, Xt[:, :5], **path)
    with pytest.raises(ValueError, match=r"t must be non-negative"):
        validation_path_tiled(NET, X, y, Xt, **{**path, "times": [-1.0]})
    with pytest.raises(ValueError, match=r"fx_valid_0 must have shape \(60, 1\)"):
        # (60,) would broadcast against the (R, T, 60, 1) outputs into (R, T, 60, 60)
        validation_path_tiled(NET, X, y[:, :1], Xt, fx_valid_0=np.zeros(60), **path)
    with pytest.raises(ValueError, match=r"fx_valid_0 contains NaN"):
        validation_path_tiled(NET, X, y, Xt, fx_valid_0=np.full((60, k), np.nan), **path)


def test_operator_matvec_takes_a_vector_not_any_array_of_its_size(small):
    X, _, _, K, _ = small
    N = X.shape[0]
    v = np.random.default_rng(3).standard_normal(N)
    with D.TiledKernelOperator(D.KernelSpec(NET), X, chunks=100, scheduler="sync") as op:
        assert _rel(op.matvec(v), K @ v) <= 1e-13
        assert _rel(op.matvec(v[:, None]), K @ v) <= 1e-13
        with pytest.raises(ValueError, match=rf"v must have shape \({N},\) or \({N}, 1\)"):
            op.matvec(v.reshape(N // 2, 2))  # N entries, but not one vector: flattening would scramble it


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chunks, match",
    [
        (0, "positive int"),
        (-5, "positive int"),
        (True, "positive int"),
        (2.5, "positive int"),
        ((100, 100), "sums to 200"),
        ((100, 0, 200), "positive ints"),
        (([150, 150], [100, 200]), "same blocks on both axes"),
    ],
)
def test_bad_chunks(chunks, match):
    X, _ = _data(300)
    with pytest.raises(ValueError, match=match):
        D.analytic_kernels(NET, X, chunks=chunks)


def test_test_side_chunks_of_zero_are_refused_not_read_as_the_default():
    X = np.random.default_rng(0).standard_normal((9, 3))
    fit = D.fit_tiled(NET, X, X[:, 0], diag_reg=1e-2, chunks=4, scheduler="sync")
    for bad in (0, False):
        with pytest.raises(ValueError, match="chunks must be a positive int"):
            fit.predict(X, chunks=bad, scheduler="sync")
        with D.TiledKernelOperator(D.KernelSpec(NET), X, chunks=4, scheduler="sync") as op:
            with pytest.raises(ValueError, match="chunks must be a positive int"):
                op.cross(X, chunks=bad).matmat(np.ones(9))


def test_chunks_for_two_inputs():
    X, _ = _data(300)
    Xt, _ = _data(50)
    assert D.resolve_chunks(100, 300, 50) == ((100, 100, 100), (50,))
    assert D.resolve_chunks(([200, 100], 50), 300, 50) == ((200, 100), (50,))
    with pytest.raises(ValueError, match="one sequence per axis"):
        D.analytic_kernels(NET, X, Xt, chunks=(200, 100))


def test_unreachable_scheduler_fails_fast_naming_it():
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    X, y = _data(100)
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=address):
        D.fit_tiled(NET, X, y, chunks=50, scheduler=address)
    assert time.monotonic() - t0 < D.CONNECT_TIMEOUT_S + 10
    with pytest.raises(ValueError, match="unknown scheduler"):
        D.fit_tiled(NET, X, y, chunks=50, scheduler="gpu-please")


CG12 = ConjugateGradient(tol=1e-12, preconditioner=Nystrom())


def test_scheduler_by_address_gives_the_same_answer(client, problem):
    X, y, Xt, *_ = problem
    X, y = X[:500], y[:500]
    by_client = D.fit_tiled(NET, X, y, diag_reg=1e-2, chunks=200, scheduler=client, method=CG12)
    by_address = D.fit_tiled(NET, X, y, diag_reg=1e-2, chunks=200, scheduler=client.scheduler.address, method=CG12)
    threads = D.fit_tiled(NET, X, y, diag_reg=1e-2, chunks=200, scheduler="threads", method=CG12)
    np.testing.assert_array_equal(by_client.coef, by_address.coef)
    np.testing.assert_array_equal(by_client.coef, threads.coef)
    np.testing.assert_array_equal(by_address.predict(Xt[:50]), threads.predict(Xt[:50], scheduler="threads"))


# ---------------------------------------------------------------------------------------------
# a worker lost mid-computation (last: the cluster restarts that worker)
# ---------------------------------------------------------------------------------------------
def test_worker_killed_mid_solve_does_not_change_the_answer(client, problem):
    X, y, Xt, *_ = problem
    X, y = X[:1200], y[:1200]
    spec = D.KernelSpec(NET)
    cg = ConjugateGradient(tol=1e-8, preconditioner=Nystrom(200))
    with D.TiledKernelOperator(spec, X, chunks=400, scheduler=client) as op:
        undisturbed, _, _ = D.solve_tiled(op, y, diag_reg=1e-2, method=cg)
    with D.TiledKernelOperator(spec, X, chunks=400, scheduler=client) as op:
        pids = client.run(os.getpid)
        holders = {
            w
            for fut in distributed.futures_of(list(op._tiles.values()))
            for w in client.who_has([fut]).get(fut.key, ())
        }
        victim = sorted(holders)[0]
        calls = {"n": 0}
        matmat = op.matmat

        def matmat_then_kill(V):
            calls["n"] += 1
            if calls["n"] == 3:  # mid-solve: the tiles on that worker are lost with it
                os.kill(pids[victim], signal.SIGKILL)
            return matmat(V)

        op.matmat = matmat_then_kill
        disturbed, _, info = D.solve_tiled(op, y, diag_reg=1e-2, method=cg)
    assert calls["n"] > 3 and info["converged"]
    np.testing.assert_array_equal(disturbed, undisturbed)


def test_estimator_chunks_matches_in_memory_fit():
    """One argument moves NTKRegressor to the tiled path; the predictions agree with the in-memory
    eigh/krylov fit to the CG tolerance, and methods that need the whole decomposition refuse."""
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(400, random_state=0)
    mem = ntksolve.NTKRegressor(diag_reg=1e-2).fit(X[:300], y[:300])
    tiled = ntksolve.NTKRegressor(diag_reg=1e-2, chunks=128, scheduler="threads").fit(X[:300], y[:300])
    pm, pt = mem.predict(X[300:]), tiled.predict(X[300:])
    assert np.linalg.norm(pt - pm) / np.linalg.norm(pm) < 1e-6
    assert tiled.predictor_ is None and tiled.tiled_ is not None
    emp = dict(kernel="empirical", hidden_layer_sizes=(32,), time=40.0, diag_reg=0.0, random_state=1)
    e_mem = ntksolve.NTKRegressor(**emp).fit(X[:300], y[:300])
    e_tiled = ntksolve.NTKRegressor(**emp, chunks=100, scheduler="sync").fit(X[:300], y[:300])
    np.testing.assert_allclose(e_tiled.predict(X[300:]), e_mem.predict(X[300:]), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="needs the in-memory solver"):
        tiled.predict_trajectory(X[300:], [1.0, 10.0])
    with pytest.raises(ValueError, match="needs the in-memory solver"):
        tiled.predict(X[300:], return_std=True)


def test_float32_empirical_kernel_fits_by_cg_in_tiles_and_in_memory():
    """A float32 empirical NTK is positive semi-definite only to float32 rounding (here its smallest
    eigenvalue is negative): the Nystrom shift must cover that rounding, not float64's, or the
    Cholesky of the landmarks' kernel fails. The reference is numpy's solve of the same float32
    kernel's ridge system, written out here."""
    from ntksolve.dynamics import gradient_descent_mse

    rng = np.random.default_rng(0)
    X = rng.standard_normal((37, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    net = ntksolve.MLP((16,), activation="relu")
    params = net.init(n_features=3, random_state=0, dtype=np.float32)
    K = ntksolve.kernels.empirical_ntk(net, params, X.astype(np.float32)).astype(np.float64)
    assert np.linalg.eigvalsh(K)[0] < 0  # the case the float64 shift could not factorise
    mu = 1e-2 * np.mean(np.diag(K))
    coef = np.linalg.solve(K + mu * np.eye(37), y)
    cg = ConjugateGradient(tol=1e-10, preconditioner=Nystrom())
    fit = D.fit_tiled(net, X, y, params=params, diag_reg=1e-2, chunks=8, scheduler="sync", method=cg)
    assert _rel(fit.coef[:, 0], coef) <= 1e-7
    # in memory, the float32 kernel with float64 targets (solved in float64): the test side the
    # identity gives the coefficients
    pred = gradient_descent_mse(K.astype(np.float32), y, diag_reg=1e-2, method=cg)
    assert _rel(pred.predict(np.inf, np.zeros(37), np.zeros(37), np.eye(37))[1], coef) <= 1e-7
    same = dict(kernel="empirical", hidden_layer_sizes=(16,), random_state=0, dtype="float32", diag_reg=1e-2)
    tiled = ntksolve.NTKRegressor(**same, chunks=8, scheduler="sync").fit(X, y)
    mem = ntksolve.NTKRegressor(**same, method=cg).fit(X, y)
    ref = ntksolve.NTKRegressor(**same, method="eigh").fit(X, y)
    # to the float32 eigendecomposition's own rounding (condition number ~1e2 times float32's eps)
    np.testing.assert_allclose(tiled.predict(X[:5]), ref.predict(X[:5]), rtol=1e-4)
    np.testing.assert_allclose(mem.predict(X[:5]), ref.predict(X[:5]), rtol=1e-4)


def test_public_tiled_kernels_take_chunks():
    net = ntksolve.MLP((16, 16), activation="erf", bias_std=0.2, n_outputs=2)
    p = net.init(3, random_state=0)
    X = np.random.default_rng(0).normal(size=(11, 3))
    lazy = ntksolve.dask.empirical_ntk(net, p, X, chunks=(4, 7), trace=False)
    assert isinstance(lazy, dask.array.Array)
    np.testing.assert_allclose(
        lazy.compute(scheduler="sync"), ntksolve.empirical_ntk(net, p, X, trace=False), rtol=1e-13, atol=1e-15
    )
    pair = ntksolve.dask.analytic_kernels(net, X, X[:5], chunks=3)
    ref = ntksolve.analytic_kernels(net, X, X[:5])
    np.testing.assert_allclose(pair.ntk.compute(scheduler="sync"), ref.ntk, rtol=1e-13)
    np.testing.assert_allclose(pair.nngp.compute(scheduler="sync"), ref.nngp, rtol=1e-13)
    with pytest.raises(ValueError, match="chunks"):
        ntksolve.dask.empirical_ntk(net, p, X, chunks=(4, 4))


def test_tiled_trace_must_be_a_bool():
    # the in-memory kernel's rule on the tiled path: a string such as "False" is truthy, and was
    # taken for the traced kernel; refused before any task, with either kind of kernel
    net = ntksolve.MLP((4,), n_outputs=2)
    p = net.init(3, random_state=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    for bad in ("False", None, 0):
        with pytest.raises(TypeError, match="trace must be True or False"):
            D.empirical_ntk(net, p, X, chunks=2, trace=bad)
        with pytest.raises(TypeError, match="trace must be True or False"):
            D.KernelSpec(net, None, trace=bad)
    spec = D.KernelSpec(net, p, trace=np.False_)
    assert spec.trace is False

"""Property-based checks (hypothesis) of the paths a careless or hostile user reaches first.

Each property holds for every generated example or the example is a clear, documented error;
never a wrong number, a NaN, or an unrelated exception. The example counts are bounded (and the
search derandomised) so the suite stays within its time budget; the model-file fuzzing lives in
``test_persistence.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs hypothesis: pip install 'ntksolve[test]'")
st = hypothesis.strategies

from ntksolve import MLP, analytic_kernels, empirical_ntk, gradient_descent_mse  # noqa: E402
from ntksolve.datasets import read_csv  # noqa: E402

FUZZ = hypothesis.settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck)
)

_numbers = st.floats(allow_nan=False, allow_infinity=False, width=64).filter(lambda v: abs(v) < 1e300)


@FUZZ
@hypothesis.given(
    table=st.integers(1, 6).flatmap(
        lambda n_rows: st.integers(2, 4).flatmap(
            lambda n_cols: st.lists(
                st.lists(_numbers, min_size=n_cols, max_size=n_cols), min_size=n_rows, max_size=n_rows
            )
        )
    ),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    header=st.booleans(),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_csv_reads_back_exactly_what_was_written(tmp_path_factory, table, delimiter, header, bom, crlf):
    n_cols = len(table[0])
    names = [f"col{j}" for j in range(n_cols)]
    lines = ([delimiter.join(names)] if header else []) + [delimiter.join(repr(v) for v in row) for row in table]
    text = ("\ufeff" if bom else "") + ("\r\n" if crlf else "\n").join(lines) + "\n"
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_bytes(text.encode("utf-8"))
    try:
        got = read_csv(str(path))
    except ValueError as exc:
        # The one refusal allowed: a file that is a single numeric row with no header cannot be
        # told apart from a header of numbers only when it has no data row after it.
        assert "data row" in str(exc) or "header" in str(exc), exc
        return
    data = np.array(table, dtype=np.float64)
    assert got.has_header == header
    assert got.delimiter == delimiter
    np.testing.assert_array_equal(np.column_stack([got.X, got.y]), data)
    if header:
        assert got.feature_names + [got.target] == names  # the byte-order mark is not in the name


_scales = st.sampled_from([1e-150, 1e-20, 1e-3, 1.0, 1e3, 1e20, 1e150])


@FUZZ
@hypothesis.given(
    activation=st.sampled_from(["relu", "erf", "identity", "tanh", "gelu", "sigmoid", "softplus"]),
    depth=st.integers(1, 4),
    weight_std=st.floats(0.1, 4.0),
    bias_std=st.sampled_from([0.0, 0.1, 1.0]),
    scale=_scales,
    seed=st.integers(0, 2**16),
    duplicate=st.booleans(),
)
def test_analytic_kernels_are_finite_symmetric_psd_or_refused(
    activation, depth, weight_std, bias_std, scale, seed, duplicate
):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((5, 3)) * scale
    if duplicate:
        X[4] = X[1]
    net = MLP((1,) * depth, activation, weight_std, bias_std)
    try:
        kern = analytic_kernels(net, X)
    except ValueError as exc:
        assert "Standardise the features" in str(exc) or "too small" in str(exc), exc  # names the fix
        return
    for K in (kern.nngp, kern.ntk):
        assert np.all(np.isfinite(K))
        np.testing.assert_array_equal(K, K.T)
        assert np.linalg.eigvalsh(K).min() >= -1e-10 * max(1.0, np.abs(K).max())
    if duplicate:  # identical inputs give exactly the diagonal value
        assert kern.ntk[1, 4] == kern.ntk[1, 1] == kern.ntk[4, 4]
    cross = analytic_kernels(net, X[:2], X)
    np.testing.assert_allclose(cross.ntk, kern.ntk[:2], rtol=1e-12, atol=0)


@FUZZ
@hypothesis.given(
    n=st.integers(1, 7),
    rank=st.integers(0, 7),
    scale=_scales,
    seed=st.integers(0, 2**16),
    t=st.sampled_from([0.0, 1.0, 10.0, 1e3, np.inf]),
    dynamics=st.sampled_from(["continuous", "discrete"]),
)
def test_closed_form_on_any_psd_kernel_is_finite_and_exact_at_the_ends(n, rank, scale, seed, t, dynamics):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, min(rank, n)))
    K = (A @ A.T) * scale
    y = rng.standard_normal(n)
    f0 = rng.standard_normal(n)
    lam_max = np.linalg.eigvalsh(K)[-1] if n else 0.0
    lr = 1.0 if lam_max <= 0 else 0.5 * 2 * n / lam_max  # half the critical rate
    if dynamics == "discrete" and t not in (0.0, np.inf):
        t = float(np.round(t))
    pred = gradient_descent_mse(K, y, lr, dynamics=dynamics)
    f = pred(t, f0)
    assert np.all(np.isfinite(f))
    if t == 0.0:
        np.testing.assert_array_equal(f, f0)
    if t == np.inf:
        # the pseudo-inverse solution: f0 plus the projection of y - f0 on the kernel's range
        w, V = np.linalg.eigh(K)
        keep = w > n * np.finfo(float).eps * max(abs(w).max(), np.finfo(float).tiny) * 10
        P = V[:, keep] @ V[:, keep].T
        np.testing.assert_allclose(f, f0 + P @ (y - f0), rtol=1e-6, atol=1e-6 * (1 + np.abs(y - f0).max()))


@FUZZ
@hypothesis.given(
    activation=st.sampled_from(["relu", "erf", "tanh", "gelu", "softplus"]),
    parameterization=st.sampled_from(["ntk", "standard"]),
    k=st.integers(1, 3),
    width=st.integers(1, 9),
    depth=st.integers(1, 3),
    scale=st.sampled_from([1e-6, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_empirical_ntk_is_symmetric_psd_and_its_cross_part_agrees(
    activation, parameterization, k, width, depth, scale, seed
):
    net = MLP((width,) * depth, activation, 1.3, 0.2, parameterization, k)
    params = net.init(3, random_state=seed)
    X = np.random.default_rng(seed).standard_normal((4, 3)) * scale
    flat = lambda T: T.transpose(0, 2, 1, 3).reshape(T.shape[0] * k, T.shape[1] * k)  # noqa: E731
    K = flat(empirical_ntk(net, params, X, trace=False))
    assert np.all(np.isfinite(K))
    np.testing.assert_allclose(K, K.T, rtol=1e-12, atol=1e-12 * np.abs(K).max())
    assert np.linalg.eigvalsh(K).min() >= -1e-9 * max(1.0, np.abs(K).max())
    cross = flat(empirical_ntk(net, params, X[:2], X, trace=False))
    np.testing.assert_allclose(cross, K[: 2 * k], rtol=1e-10, atol=1e-12 * np.abs(K).max())


@hypothesis.settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck)
)
@hypothesis.given(
    n=st.integers(2, 12),
    d=st.integers(1, 4),
    x_scale=_scales,
    y_scale=_scales,
    constant_column=st.booleans(),
    duplicate_rows=st.booleans(),
    seed=st.integers(0, 2**16),
    kernel=st.sampled_from(["analytic", "empirical"]),
)
def test_regressor_predicts_finite_numbers_or_refuses_clearly(
    n, d, x_scale, y_scale, constant_column, duplicate_rows, seed, kernel
):
    from ntksolve import NTKRegressor

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * x_scale
    y = rng.standard_normal(n) * y_scale
    if constant_column:
        X[:, 0] = 3.0
    if duplicate_rows:
        X[-1], y[-1] = X[0], y[0]
    reg = NTKRegressor(kernel=kernel, time=50.0)
    try:
        reg.fit(X, y)
        pred = reg.predict(X)
    except ValueError as exc:
        assert "Standardise" in str(exc) or "StandardScaler" in str(exc), exc
        return
    assert np.all(np.isfinite(pred))
    if kernel == "analytic":
        # the trained ensemble's mean starts at 0 and moves towards y: it stays on the targets'
        # scale (the empirical network's own f_0 may not: it is the network's, not the data's)
        assert np.abs(pred).max() <= 1e3 * (np.abs(y).max() + np.finfo(float).tiny)

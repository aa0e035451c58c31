"""Edge cases of the kernels and networks that used to give a quiet wrong answer or an unclear error:
an overflowing empirical kernel, a ``trace`` that is not a bool, a weight_std whose square overflows,
an empty batch for a Network, and the CNN builders' integer arguments. Each pins its number to an
independent source (the float64 computation, the explicit Jacobian, a closed form)."""

import numpy as np
import pytest

from ntksolve import MLP, analytic_kernels, empirical_nngp, empirical_ntk, jacobian
from ntksolve.cnn import digits_cnn, sweep_cnn
from ntksolve.nets import Conv1D, Dense, GlobalAvgPool, Network

F32_MAX = float(np.finfo(np.float32).max)


def _mlp_case():
    # monomial(4) twice: the kernel grows like |x|^32; at |x| = 100 it leaves float32's range
    return MLP((3, 3), activation="monomial(4)"), 2, np.full((2, 2), 100.0)


def _conv_case():
    net = Network([Conv1D(2, 2), "monomial(4)", Conv1D(2, 2), "monomial(4)", GlobalAvgPool(), Dense(1)])
    return net, (4, 1), np.full((2, 4, 1), 30.0)


@pytest.mark.parametrize("case", [_mlp_case, _conv_case], ids=["mlp", "network"])
def test_empirical_kernels_refuse_an_overflow(case):
    net, shape, X = case()
    p64 = net.init(shape, random_state=0)
    p32 = [tuple(a.astype(np.float32) for a in pair) if pair else pair for pair in p64]
    # the float64 computation is the independent number: the true kernels exceed float32's range
    theta = empirical_ntk(net, p64, X)
    assert np.isfinite(theta).all() and theta.max() > F32_MAX
    assert empirical_nngp(net, p64, X).max() > F32_MAX
    with pytest.raises(ValueError, match="overflowed float32.*float64"):
        empirical_ntk(net, p32, X)
    with pytest.raises(ValueError, match="overflowed float32.*float64"):
        empirical_ntk(net, p32, X, X[:1], trace=False, block_size=1)
    with pytest.raises(ValueError, match="overflowed float32.*float64"):
        empirical_nngp(net, p32, X)


def test_jacobian_refuses_an_overflow():
    net = MLP((3,), activation="monomial(8)")
    p = net.init(2, random_state=0)
    X = np.full((1, 2), 1e40)  # (1e40)^8 overflows float64 in the first hidden layer
    assert not np.isfinite(net.apply(p, X)).all()  # the forward pass itself overflows
    with pytest.raises(ValueError, match="overflowed float64"):
        jacobian(net, p, X)
    with pytest.raises(ValueError, match="overflowed float64"):
        empirical_ntk(net, p, X)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: MLP((4,), n_outputs=2), 3),
        (lambda: Network([Dense(4), "relu", Dense(2)]), (3,)),
        (lambda: Network([Conv1D(3, 2), "relu", GlobalAvgPool(), Dense(2)]), (3, 1)),
    ],
    ids=["mlp", "dense-network", "conv-network"],
)
def test_trace_must_be_a_bool(make, shape):
    net = make()
    p = net.init(shape, random_state=0)
    X = np.random.default_rng(0).normal(size=(4, *np.atleast_1d(shape)))
    J = jacobian(net, p, X)
    full = np.einsum("iap,jbp->ijab", J, J)
    assert np.allclose(empirical_ntk(net, p, X, trace=np.False_), full, rtol=1e-12, atol=0)
    assert np.allclose(empirical_ntk(net, p, X, trace=np.True_), np.einsum("ijaa->ij", full) / 2, rtol=1e-12, atol=0)
    for bad in ("no", "False", None, 0):
        with pytest.raises(TypeError, match="trace must be True or False"):
            empirical_ntk(net, p, X, trace=bad)


@pytest.mark.parametrize("name", ["weight_std", "bias_std"])
def test_a_std_whose_square_overflows_is_refused(name):
    with pytest.raises(ValueError, match=f"{name}.*square"):
        MLP((3,), **{name: 1e200})
    with pytest.raises(ValueError, match=f"{name}.*square"):
        Dense(3, **{name: 1e200})


def test_a_large_weight_std_below_the_limit_is_exact():
    # depth 0: Theta(x, x') = sw^2 <x, x'> / d + sb^2 (closed form)
    X = np.array([[1.0, 2.0], [0.5, -1.0]])
    for sw in (1e150, 1e70):  # the analytic kernels accept variances up to 1e150
        net = MLP((), weight_std=sw, bias_std=0.0)
        expected = sw**2 * (X @ X.T) / 2
        assert np.allclose(empirical_ntk(net, net.init(2, random_state=0), X), expected, rtol=1e-14, atol=0)
    assert np.allclose(analytic_kernels(net, X).ntk, expected, rtol=1e-14, atol=0)


def test_an_empty_batch_for_a_network_names_the_problem():
    net = Network([Conv1D(2, 2), "relu", GlobalAvgPool(), Dense(1)])
    p = net.init((4, 1), random_state=0)
    empty = np.zeros((0, 4, 1))
    for call in (
        lambda: empirical_ntk(net, p, empty),
        lambda: jacobian(net, p, empty),
        lambda: analytic_kernels(net, empty),
        lambda: net.apply(p, empty),
    ):
        with pytest.raises(ValueError, match="at least one sample"):
            call()


def test_cnn_builders_take_numpy_and_single_ints():
    X = np.random.default_rng(0).normal(size=(2, 64))
    ref = digits_cnn(3, depth=2)
    assert digits_cnn(3, depth=np.int64(2)) == ref
    assert sweep_cnn(3) == digits_cnn(3, depth=1)
    p = ref.init(64, random_state=0)
    # the same network: the same kernel as the explicit Jacobian's J J^T
    J = jacobian(digits_cnn(3, depth=np.int64(2)), p, X)
    assert np.allclose(empirical_ntk(ref, p, X), np.einsum("iap,jap->ij", J, J) / J.shape[1], rtol=1e-12, atol=0)


def test_linearisation_check_names_its_own_bad_inputs():
    from ntksolve.linearisation import linearisation_check

    net = MLP((8,))
    p = net.init(3, random_state=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    y = X[:, 0]
    for bad, match in (
        (np.where(X > 1, np.nan, X), r"^X contains NaN"),
        (X[:, 0], r"^X must be 2-D"),
        (X[:, :2], r"^X has 2 features, but the network expects 3"),
        (np.full((5, 3), "a"), r"^X must be numeric"),
    ):
        with pytest.raises(ValueError, match=match):
            linearisation_check(net, p, bad, y, steps=5, learning_rate=0.5)


@pytest.mark.parametrize("first", [True, False], ids=["on-inputs", "after-dense"])
def test_layer_norm_without_eps_refuses_a_constant_example(first):
    from ntksolve.nets import LayerNorm

    layers = [LayerNorm(eps=0.0), Dense(4), Dense(1)] if first else [Dense(4), LayerNorm(eps=0.0), Dense(1)]
    net = Network(layers)
    p = net.init(3, random_state=0)
    X = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]])  # the second row normalises 0 / 0
    calls = [lambda: net.apply(p, X), lambda: empirical_ntk(net, p, X), lambda: jacobian(net, p, X)]
    if not first:
        calls.append(lambda: analytic_kernels(net, X))
    for call in calls:
        with pytest.raises(ValueError, match=r"LayerNorm\(eps=0\.0\) met an example.*variance 0.*eps > 0"):
            call()
    # the first row alone is fine: (x - mean) / std, here of (1, 2, 4) when the layer norm is first
    if first:
        x = X[0]
        xhat = (x - x.mean()) / x.std()
        W, b = p[1]
        expected = p[2][0] @ (W @ xhat / np.sqrt(3)) / 2
        assert np.allclose(net.apply(p, X[:1])[0, 0], expected, rtol=1e-12)


def test_mlp_params_must_be_arrays():
    net = MLP((3,))
    p = net.init(2, random_state=0)
    X = np.array([[1.0, -2.0], [0.5, 0.25]])
    as_lists = [(W.tolist(), b.tolist()) for W, b in p]
    for call in (net.apply, lambda q, X: empirical_ntk(net, q, X), lambda q, X: jacobian(net, q, X)):
        with pytest.raises(TypeError, match=r"params\[0\] must be a pair of numpy arrays.*np.asarray"):
            call(as_lists, X)
    # the arrays of the same numbers: f = W2 relu(W1 x / sqrt(2)) / sqrt(3) (NTK scaling, no bias)
    (W1, _), (W2, _) = p
    expected = np.maximum(X @ W1.T / np.sqrt(2), 0) @ W2.T / np.sqrt(3)
    assert np.allclose(net.apply([(np.asarray(W), np.asarray(b)) for W, b in as_lists], X), expected, rtol=1e-14)


def test_inputs_beyond_float32_are_named_as_such():
    net = MLP((3,))
    p32 = net.init(2, random_state=0, dtype=np.float32)
    X = np.array([[1e39, 1.0], [0.5, 2.0]])  # finite in float64, beyond float32's 3.4e38
    assert np.isfinite(X).all() and not np.isfinite(X.astype(np.float32)).all()
    with pytest.raises(ValueError, match=r"X1 has 1 entries beyond the range of float32.*float64 parameters"):
        empirical_ntk(net, p32, X)
    with pytest.raises(ValueError, match=r"contains NaN or infinity"):
        empirical_ntk(net, p32, np.where(X > 1e38, np.inf, X))
    # in float64 the same inputs are fine: depth-1 relu, f = W2 relu(W1 x / sqrt(2)) / sqrt(3)
    p64 = [(W.astype(np.float64), b.astype(np.float64)) for W, b in p32]
    (W1, _), (W2, _) = p64
    expected = np.maximum(X @ W1.T / np.sqrt(2), 0) @ W2.T / np.sqrt(3)
    assert np.allclose(net.apply(p64, X), expected, rtol=1e-12)


def test_jacobian_vector_product_names_v_params():
    from ntksolve.nets.forward_mode import jacobian_vector_product

    net = MLP((3,), bias_std=0.5)
    p = net.init(2, random_state=0)
    X = np.array([[1.0, -2.0], [0.5, 0.25]])
    v = net.init(2, random_state=1)
    # J v from the explicit Jacobian (NTK parameterisation: the stored parameters are the trained ones)
    assert np.allclose(jacobian_vector_product(net, p, X, v), jacobian(net, p, X) @ net.flatten_params(v), rtol=1e-12)
    with pytest.raises(TypeError, match=r"^v_params must be shaped like params: params\[0\] must be a pair of numpy"):
        jacobian_vector_product(net, p, X, [(W.tolist(), b.tolist()) for W, b in v])


def test_the_mlp_only_functions_name_the_way_out_for_a_network():
    from ntksolve import linearisation_check
    from ntksolve.nets.forward_mode import jacobian_vector_product, own_parameter_image
    from ntksolve.nets.trained_layers import layers_from_mlp
    from ntksolve.sklearn.trainer import train_network_sklearn

    mlp = MLP((4,), parameterization="standard")
    p = mlp.init(3, random_state=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    y = X[:, :1]
    calls = {
        "linearisation_check": lambda n, q: linearisation_check(n, q, X, y, steps=1, learning_rate=0.1),
        "forward-mode": lambda n, q: jacobian_vector_product(n, q, X, q),
        "own_parameter_image": lambda n, q: own_parameter_image(n, q, X),
        "layers_from_mlp": lambda n, q: layers_from_mlp(n, q),
        "scikit-learn": lambda n, q: train_network_sklearn(n, q, X, y, steps=1, learning_rate=0.1),
    }
    is_mlp = Network.from_mlp(mlp)
    other = Network([Dense(4), "relu", Dense(4), "tanh", Dense(1)])
    for name, call in calls.items():
        with pytest.raises(TypeError, match="this Network is an MLP: pass net.as_mlp"):
            call(is_mlp, Network.params_from_mlp(p))
        with pytest.raises(TypeError, match="takes an ntksolve.MLP as net, got Network"):
            call(other, other.init(3, random_state=0))
        with pytest.raises(TypeError, match="takes an ntksolve.MLP as net, got str"):
            call("mlp", p)
    # the conversion the message names gives the MLP's own result
    assert np.array_equal(
        own_parameter_image(is_mlp.as_mlp(), Network.params_to_mlp(Network.params_from_mlp(p)), X),
        own_parameter_image(mlp, p, X),
    )

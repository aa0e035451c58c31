"""Network of Dense and activation layers: kernels against an explicit Jacobian, and the MLP."""

import numpy as np
import pytest

from ntksolve import MLP, empirical_ntk, jacobian
from ntksolve.kernels.network_empirical import network_empirical_nngp, network_empirical_ntk, network_jacobian
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual

from reference import network_fd_jacobian


PER_LAYER = [Dense(6, 1.5, 0.3), "tanh", Dense(5, 0.7, bias=False), Activation("leaky_relu(0.2)"), Dense(2, 1.1, 0.5)]


def test_per_layer_network_jacobian_matches_finite_differences():
    net = Network(PER_LAYER)
    X = np.random.default_rng(0).standard_normal((4, 3))
    params = net.init(3, random_state=1)
    J = network_jacobian(net, params, X)
    assert J.shape == (4, 2, net.n_params(3))
    np.testing.assert_allclose(J, network_fd_jacobian(net, params, X), atol=1e-7)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_per_layer_network_ntk_is_jacobian_gram(parameterization):
    net = Network(PER_LAYER, parameterization=parameterization)
    rng = np.random.default_rng(2)
    X, Z = rng.standard_normal((5, 3)), rng.standard_normal((3, 3))
    params = net.init(3, random_state=3)
    JX, JZ = network_jacobian(net, params, X), network_jacobian(net, params, Z)
    full = np.einsum("iap,jbp->ijab", JX, JX)
    np.testing.assert_allclose(network_empirical_ntk(net, params, X, trace=False), full, rtol=0, atol=1e-11)
    np.testing.assert_allclose(network_empirical_ntk(net, params, X), np.einsum("ijaa->ij", full) / 2, atol=1e-11)
    cross = np.einsum("iap,jbp->ijab", JX, JZ)
    np.testing.assert_allclose(network_empirical_ntk(net, params, X, Z, trace=False, block_size=2), cross, atol=1e-11)


def test_mlp_as_network_gives_the_mlp_kernels():
    mlp = MLP((7, 5), "erf", 1.3, 0.2, n_outputs=3, bias=(True, False, True))
    net = Network.from_mlp(mlp)
    assert net.as_mlp() == mlp
    X = np.random.default_rng(4).standard_normal((6, 4))
    p = mlp.init(4, random_state=0)
    q = Network.params_from_mlp(p)
    assert Network.params_to_mlp(q) == [tuple(pair) for pair in p]
    np.testing.assert_allclose(
        network_empirical_ntk(net, q, X, trace=False), empirical_ntk(mlp, p, X, trace=False), rtol=1e-14, atol=1e-14
    )
    np.testing.assert_allclose(network_jacobian(net, q, X), jacobian(mlp, p, X), rtol=1e-14, atol=1e-15)
    from ntksolve import empirical_nngp

    np.testing.assert_allclose(network_empirical_nngp(net, q, X), empirical_nngp(mlp, p, X), rtol=1e-14)
    np.testing.assert_array_equal(net.apply(q, X), mlp.apply(p, X))
    # the public functions run an MLP-shaped network on the MLP's own path: the same numbers exactly
    from ntksolve import empirical_nngp as public_nngp

    np.testing.assert_array_equal(empirical_ntk(net, q, X, trace=False), empirical_ntk(mlp, p, X, trace=False))
    np.testing.assert_array_equal(jacobian(net, q, X), jacobian(mlp, p, X))
    np.testing.assert_array_equal(public_nngp(net, q, X[:2], X), public_nngp(mlp, p, X[:2], X))


def test_network_spec_value_semantics_and_errors():
    net = Network(PER_LAYER)
    assert Network.from_config(net.get_config()) == net
    assert hash(Network.from_config(net.get_config())) == hash(net)
    assert net.n_outputs == 2 and net.output_shape((3,)) == (2,)
    assert "Dense(5" in repr(net)
    assert Network(PER_LAYER[:-1] + [Dense(3)]) != net
    assert Network.from_mlp(MLP((4,), "relu", 1.2, 0.1, "standard")).as_mlp() == MLP((4,), "relu", 1.2, 0.1, "standard")
    assert Network([Dense(4, 1.0), "relu", Dense(1, 2.0)]).as_mlp() is None
    with pytest.raises(ValueError, match="Flatten"):
        net.init((3, 3))
    with pytest.raises(ValueError, match="no parameters"):
        Network(["relu"])
    with pytest.raises(TypeError, match="network layer"):
        Network([Dense(2), 3])
    with pytest.raises(ValueError, match="one parameterisation"):
        Network([Dense(2, parameterization="standard")])
    with pytest.raises(ValueError, match="per-example shape"):
        network_empirical_ntk(net, net.init(3), np.ones((2, 4)))


def test_params_on_a_layer_that_takes_none_are_refused():
    """Entries a layer has no use for were ignored: a ``gamma`` given to ``LayerNorm(affine=False)``
    left the output as without it, an extra entry of a residual block's list too."""
    X = np.random.default_rng(0).standard_normal((3, 4))
    net = Network([Dense(4), LayerNorm(), Residual([Dense(4), "relu", Dense(4)]), Dense(1)])
    p = net.init(4, random_state=0)
    gamma = (np.full(4, 3.0), np.ones(4))  # would scale and shift the normalised features
    with pytest.raises(
        ValueError, match=r"layer 1 \(LayerNorm\) has no parameters, so its entry of params must be \(\)"
    ):
        net.apply([p[0], gamma, p[2], p[3]], X)
    with pytest.raises(ValueError, match=r"layer 2 \(Residual\), layer 1 \(relu\) has no parameters"):
        net.apply([p[0], p[1], [p[2][0], p[2][0], p[2][2]], p[3]], X)
    with pytest.raises(ValueError, match=r"layer 2 \(Residual\) must be a list of 3 entries .* got 4 entries"):
        empirical_ntk(net, [p[0], p[1], p[2] + [p[3]], p[3]], X)
    with pytest.raises(ValueError, match=r"layer 2 \(Residual\) must be a list of 3 entries .* got NoneType"):
        net.check_params([p[0], p[1], None, p[3]], (4,))
    net.check_params([p[0], [], tuple(p[2]), list(p[3])], (4,))  # any sequence of the right entries

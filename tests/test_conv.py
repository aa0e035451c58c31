"""Convolutions, global average pooling and flatten: empirical kernels against an explicit Jacobian,
finite differences and torch.func; PyTorch import; the errors."""

import numpy as np
import pytest

from ntksolve.kernels.network_empirical import network_empirical_nngp, network_empirical_ntk, network_jacobian
from ntksolve.nets.conv import Conv, Conv1D, Conv2D
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.pooling import Flatten, GlobalAvgPool

from reference import network_fd_jacobian

ARCHITECTURES = {
    # padding 'same', a rectangular kernel with a stride and explicit padding, pooling
    "gap_2d": (
        [
            Conv2D(3, 3, padding="same", bias_std=0.3),
            "tanh",
            Conv2D(4, (2, 3), stride=(1, 2), padding=(0, 1), bias_std=0.5),
            "relu",
            GlobalAvgPool(),
            Dense(3, bias_std=0.2),
        ],
        (5, 5, 2),
    ),
    # 1-D, no bias, flatten into a dense tail
    "flatten_1d": (
        [Conv1D(3, 3, bias=False), "erf", Flatten(), Dense(4, 1.3), Activation("leaky_relu(0.2)"), Dense(2)],
        (7, 2),
    ),
    # stride 2, a 1x1 convolution, pooling as the output
    "pool_output": ([Conv2D(3, 2, stride=2), "erf", Conv2D(2, 1, bias_std=1.0), GlobalAvgPool()], (4, 4, 1)),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_conv_jacobian_matches_finite_differences(name):
    layers, shape = ARCHITECTURES[name]
    net = Network(layers)
    X = np.random.default_rng(0).standard_normal((3,) + shape)
    params = net.init(shape, random_state=1)
    J = network_jacobian(net, params, X)
    assert J.shape == (3, net.output_shape(shape)[0], net.n_params(shape))
    np.testing.assert_allclose(J, network_fd_jacobian(net, params, X), atol=2e-8)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_conv_ntk_is_jacobian_gram(name, parameterization):
    layers, shape = ARCHITECTURES[name]
    net = Network(layers, parameterization=parameterization)
    rng = np.random.default_rng(2)
    X, Z = rng.standard_normal((5,) + shape), rng.standard_normal((3,) + shape)
    params = net.init(shape, random_state=3)
    JX, JZ = network_jacobian(net, params, X), network_jacobian(net, params, Z)
    full = np.einsum("iap,jbp->ijab", JX, JX)
    k = full.shape[2]
    np.testing.assert_allclose(network_empirical_ntk(net, params, X, trace=False), full, rtol=0, atol=1e-11)
    np.testing.assert_allclose(
        network_empirical_ntk(net, params, X, block_size=2), np.einsum("ijaa->ij", full) / k, rtol=0, atol=1e-11
    )
    np.testing.assert_allclose(
        network_empirical_ntk(net, params, X, Z, trace=False, block_size=2),
        np.einsum("iap,jbp->ijab", JX, JZ),
        rtol=0,
        atol=1e-11,
    )


def test_conv_float32_and_nngp():
    layers, shape = ARCHITECTURES["gap_2d"]
    net = Network(layers)
    X = np.random.default_rng(4).standard_normal((4,) + shape)
    p64 = net.init(shape, random_state=5)
    p32 = [tuple(a.astype(np.float32) for a in p) for p in p64]
    t64 = network_empirical_ntk(net, p64, X)
    t32 = network_empirical_ntk(net, p32, X)
    assert t32.dtype == np.float32
    np.testing.assert_allclose(t32, t64, rtol=1e-4)
    # the readout's input kernel: the pooled features' Gram, from the forward pass alone
    h = X
    for layer, p in zip(net.layers[:-1], p64):
        h = layer.forward(p, h, False)[0]
    ref = 1.0 / h.shape[1] * h @ h.T + 0.2**2
    np.testing.assert_allclose(network_empirical_nngp(net, p64, X), ref, rtol=1e-13)


def test_conv_shapes_and_config():
    net = Network([Conv2D(6, 3, padding="same"), "relu", Conv2D(8, 2, stride=2), "relu", GlobalAvgPool(), Dense(10)])
    assert net.shapes((8, 8, 1)) == ((8, 8, 1), (8, 8, 6), (8, 8, 6), (4, 4, 8), (4, 4, 8), (8,), (10,))
    assert net.n_params((8, 8, 1)) == 6 * 9 + 6 + 8 * 24 + 8 + 10 * 8 + 10
    assert Network.from_config(net.get_config()) == net
    assert Conv(4, (3, 3)) == Conv2D(4, 3)
    assert Network([Conv1D(4, 5, padding=2), Flatten(), Dense(1)]).shapes((9, 3))[-2] == (36,)
    # standard parameterisation: the dense layer on each patch's scales, fan-in C kh kw
    s = Network([Conv2D(4, 3), Flatten(), Dense(1)], parameterization="standard").layers[0].scales((5, 5, 2))
    assert s.weight == pytest.approx(1 / np.sqrt(18)) and s.grad_weight == 1.0


def test_conv_errors_are_clear():
    with pytest.raises(ValueError, match="does not tile"):
        Network([Conv2D(2, 3, stride=2), Flatten(), Dense(1)]).init((6, 6, 1))
    with pytest.raises(ValueError, match="needs stride 1"):
        Conv2D(2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="larger than the padded input"):
        Network([Conv2D(2, 5), Flatten(), Dense(1)]).init((3, 3, 1))
    with pytest.raises(ValueError, match="Flatten"):
        Network([Conv2D(2, 3), Dense(1)]).init((5, 5, 1))
    with pytest.raises(ValueError, match="flat"):
        Network([Conv2D(2, 3)]).init((5, 5, 1))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        Network([Conv2D(2, 3), Flatten(), Dense(1)]).init((25,))
    with pytest.raises(ValueError, match="after a convolution"):
        Network([Dense(3), GlobalAvgPool(), Dense(1)]).init((4,))
    with pytest.raises(ValueError, match="kernel_size"):
        Conv(2, (3, 3, 3))
    with pytest.raises(ValueError, match="padding"):
        Conv2D(2, 3, padding="full")


def test_reshape_refuses_a_spatial_input_of_another_layout():
    """``Reshape((5, 5, 3))`` reads flat rows as channels-last images; NCHW images ``(3, 5, 5)`` have
    the same size and were read row-major as if channels last (another function, silently)."""
    from ntksolve.nets.pooling import Reshape

    net = Network([Reshape((5, 5, 3)), Conv2D(2, 3, padding="same"), "relu", GlobalAvgPool(), Dense(1)])
    X = np.random.default_rng(8).standard_normal((2, 5, 5, 3))
    params = net.init((75,), random_state=9)
    with pytest.raises(ValueError, match=r"Reshape\(\(5, 5, 3\)\) takes flat inputs.*\(3, 5, 5\).*to_channels_last"):
        net.apply(params, np.ascontiguousarray(X.transpose(0, 3, 1, 2)))
    with pytest.raises(ValueError, match="takes flat inputs"):
        Network([Reshape((4, 2, 1)), Conv2D(1, 1), Flatten(), Dense(1)]).init((2, 4))
    # flat rows, the shape itself and the shape up to axes of size 1 are one reading
    f = net.apply(params, X.reshape(2, -1))
    np.testing.assert_array_equal(net.apply(params, X), f)
    one = Network([Reshape((4, 4, 1)), Conv2D(2, 3), Flatten(), Dense(1)])
    p1 = one.init(16, random_state=0)
    img = np.random.default_rng(1).standard_normal((3, 4, 4))
    np.testing.assert_array_equal(one.apply(p1, img), one.apply(p1, img.reshape(3, 16)))


torch = pytest.importorskip("torch")


def _torch_ntk(m, x):
    from torch.func import functional_call, jacrev, vmap

    ps = {k: v.detach() for k, v in m.named_parameters()}
    J = vmap(jacrev(lambda p, xi: functional_call(m, p, (xi[None],))[0]), (None, 0))(ps, x)
    Jc = torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in J.values()], 2)
    return torch.einsum("iap,jbp->ijab", Jc, Jc).numpy()


def _torch_modules():
    nn = torch.nn
    torch.manual_seed(0)
    return [
        (
            nn.Sequential(
                nn.Conv2d(2, 3, 3, padding="same"),
                nn.ReLU(),
                nn.Conv2d(3, 4, (2, 3), stride=(1, 2), padding=(0, 1), bias=False),
                nn.Tanh(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 3),
            ),
            (2, 5, 5),
        ),
        (
            nn.Sequential(
                nn.Conv1d(2, 3, 4, padding="same"),
                nn.GELU(),
                nn.Flatten(),
                nn.Linear(21, 4),
                nn.ReLU(),
                nn.Linear(4, 2),
            ),
            (2, 7),
        ),
        (nn.Sequential(nn.Conv2d(1, 3, 2, stride=2), nn.Sigmoid(), nn.Flatten(), nn.Linear(18, 2)), (1, 4, 6)),
    ]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_torch_import_gives_the_module_and_its_autograd_ntk():
    from ntksolve.torch.conv_import import conv_from_torch, conv_to_torch, to_channels_last

    for m, shape in _torch_modules():
        m = m.double()
        net, params = conv_from_torch(m, shape)
        assert net.parameterization == "standard"
        x = torch.randn((4,) + shape, dtype=torch.float64)
        X = to_channels_last(x.numpy())
        ref = m(x).detach().numpy()
        np.testing.assert_allclose(net.apply(params, X), ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(
            network_empirical_ntk(net, params, X, trace=False), _torch_ntk(m, x), rtol=0, atol=1e-11
        )
        back = conv_to_torch(net, params, X.shape[1:])
        np.testing.assert_allclose(back(x).detach().numpy(), ref, rtol=0, atol=1e-13)


def test_public_torch_interop_reads_and_writes_convolutions():
    import ntksolve.torch as nt_torch

    m, shape = _torch_modules()[0]
    m = m.double()
    net, params = nt_torch.from_torch(m, input_shape=shape)
    x = torch.randn((3,) + shape, dtype=torch.float64)
    X = nt_torch.to_channels_last(x.numpy())
    ref = m(x).detach().numpy()
    np.testing.assert_allclose(net.apply(params, X), ref, rtol=0, atol=1e-13)
    back = nt_torch.to_torch(net, params, input_shape=X.shape[1:])
    np.testing.assert_allclose(back(x).detach().numpy(), ref, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="input shape"):
        nt_torch.from_torch(m)
    with pytest.raises(ValueError, match="input shape"):
        nt_torch.to_torch(net, params)
    with pytest.raises(ValueError, match="convolutional modules only"):
        nt_torch.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), input_shape=(1, 3))


def test_torch_import_refuses_what_it_cannot_read():
    from ntksolve.torch.conv_import import conv_from_torch

    nn = torch.nn
    with pytest.raises(ValueError, match="does not tile"):
        conv_from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Flatten(), nn.Linear(8, 1)), (1, 6, 6))
    with pytest.raises(ValueError, match="dilation"):
        conv_from_torch(nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(2, 1)), (1, 5, 5))
    with pytest.raises(ValueError, match="global average pooling"):
        conv_from_torch(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 1)), (1, 6, 6)
        )
    with pytest.raises(ValueError, match="MaxPool2d"):
        conv_from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 1)), (1, 6, 6))
    with pytest.raises(ValueError, match="in_features"):
        conv_from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(5, 1)), (1, 6, 6))


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_train_network_steps_a_cnn_by_its_jacobian(parameterization):
    """Two steps of full-batch gradient descent on the MSE ``1/(2Nk) sum ||f - y||^2`` equal the
    steps ``theta -= eta J^T (f - y) / (N k)`` from the explicit Jacobian (in trained units)."""
    from ntksolve import train_network

    layers, shape = ARCHITECTURES["gap_2d"]
    net = Network(layers, parameterization=parameterization)
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((6,) + shape), rng.standard_normal((6, 3))
    params = net.init(shape, random_state=7)
    eta = 0.3
    res = train_network(net, params, X, y, steps=2, learning_rate=eta, record_at=[0, 2])
    # the stored parameters per trained one: W_trained = t W (standard: t = ws)
    t = np.concatenate(
        [
            np.concatenate([np.full(np.size(p[0]), s.trained_weight), np.full(np.size(p[1]), s.trained_bias)])
            for p, s in (
                (p, leaf.scales(sh))
                for leaf, p, sh in (
                    (l, p, sh) for l, p, sh in zip(net.layers, params, net.shapes(shape)) if l.has_params
                )
            )
        ]
    )
    theta = net.flatten_params(params)
    for _ in range(2):
        cur = net.unflatten_params(theta, shape)
        J = network_jacobian(net, cur, X)
        r = (net.apply(cur, X) - y) / y.size
        theta = theta - eta * np.einsum("iap,ia->p", J, r) / t
    np.testing.assert_allclose(net.flatten_params(res.params), theta, rtol=0, atol=1e-12)

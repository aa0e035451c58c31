"""PyTorch import of convolutional modules: nested containers read as flat ones, and the parameter
checks of the MLP importer (frozen, meta, dtype) kept by the convolutional and the LayerNorm importers;
numbers against the module itself and torch.func."""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ntksolve.kernels.network_empirical import network_empirical_ntk  # noqa: E402
from ntksolve.torch import Residual, from_torch, to_channels_last, train  # noqa: E402

from test_network_torch import torch_ntk  # noqa: E402  (torch.func's NTK over every parameter)


def test_nested_convolutional_sequential_is_read_as_the_flat_one():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()), nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    ).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    net, params = from_torch(m, input_shape=(1, 4, 4))
    X = to_channels_last(x.numpy())
    np.testing.assert_allclose(net.apply(params, X), m(x).detach().numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(network_empirical_ntk(net, params, X, trace=False), torch_ntk(m, x.numpy()), atol=1e-11)
    with pytest.raises(ValueError, match="input shape"):
        from_torch(m)
    with pytest.raises(TypeError, match=r"Conv2d is not an nn.Sequential"):
        from_torch(nn.Conv2d(1, 2, 3), input_shape=(1, 4, 4))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1)).double()


def test_convolutional_import_refuses_frozen_meta_and_bad_shapes():
    m = _cnn()
    m[0].weight.requires_grad_(False)  # PyTorch's NTK would omit it; ntksolve's network trains it
    with pytest.raises(ValueError, match="requires_grad=False"):
        from_torch(m, input_shape=(1, 4, 4))
    from_torch(_cnn().requires_grad_(False), input_shape=(1, 4, 4))  # all frozen: the same network
    meta = nn.Sequential(nn.Conv2d(1, 2, 3, device="meta"), nn.Flatten(), nn.Linear(8, 1, device="meta"))
    with pytest.raises(ValueError, match=r"module\[0\].weight is on the meta device"):
        from_torch(meta, input_shape=(1, 4, 4))
    with pytest.raises(TypeError, match=r"input_shape must be .*\(C, H, W\)"):
        from_torch(_cnn(), input_shape=4)
    with pytest.raises(ValueError, match=r"input_shape must be .*positive"):
        from_torch(_cnn(), input_shape=(1, -4, 4))


def test_convolutional_dropout_in_training_mode_says_eval():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout2d(0.5), nn.Flatten(), nn.Linear(8, 1)).double()
    with pytest.raises(ValueError, match=r"module\[1\] \(Dropout2d\) is dropout in training mode.*module.eval\(\)"):
        from_torch(m, input_shape=(1, 4, 4))
    net, params = from_torch(m.eval(), input_shape=(1, 4, 4))  # inactive: dropped
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    np.testing.assert_allclose(net.apply(params, to_channels_last(x.numpy())), m(x).detach().numpy(), atol=1e-13)


def test_pooling_of_the_wrong_dimension_is_refused():
    # AdaptiveAvgPool2d on a 1-D batch (N, C, L) pools the batch as one image: another function
    m = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"module\[2\] \(AdaptiveAvgPool2d\).*AdaptiveAvgPool1d"):
        from_torch(m.double(), input_shape=(1, 6))


def test_layer_norm_import_refuses_meta_parameters():
    m = nn.Sequential(nn.Linear(3, 4, device="meta"), nn.LayerNorm(4, device="meta"), nn.Linear(4, 1, device="meta"))
    with pytest.raises(ValueError, match=r"module\[0\].weight is on the meta device"):
        from_torch(m)


def test_training_a_module_without_trainable_parameters_is_refused_before_any_step():
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double().requires_grad_(False)
    X, y = np.ones((4, 3)), np.zeros(4)
    with pytest.raises(ValueError, match=r"requires_grad_\(True\)"):
        train(m, X, y, optimizer=functools.partial(torch.optim.SGD, lr=0.1), steps=1)


@pytest.mark.parametrize(
    "module, match",
    [
        # PyTorch cannot run these (LayerNorm(6) on 4 features): nothing may be imported for them
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(6, elementwise_affine=False), nn.Linear(4, 1)),
            r"module\[1\] \(LayerNorm\) normalises 6 features, but its input has 4",
        ),
        (
            lambda: nn.Sequential(nn.LayerNorm(5, elementwise_affine=False), nn.Linear(3, 4), nn.Linear(4, 1)),
            r"module\[1\] \(Linear\) has in_features=3, but its input has 5",
        ),
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(5, 1)),
            r"module\[2\] \(Linear\) has in_features=5, but its input has 4",
        ),
        (
            lambda: nn.Sequential(nn.Linear(3, 4), Residual(nn.Linear(4, 5)), nn.Linear(4, 1)),
            r"module\[1\] \(Residual\) maps 4 features to 5",
        ),
    ],
)
def test_layer_norm_module_that_cannot_run_is_refused(module, match):
    m = module().double()
    with pytest.raises(RuntimeError):
        m(torch.zeros(2, m[0].normalized_shape[0] if isinstance(m[0], nn.LayerNorm) else 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        from_torch(m)


def test_layer_norm_first_takes_its_width_as_the_input():
    torch.manual_seed(1)
    m = nn.Sequential(nn.LayerNorm(3, elementwise_affine=False), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    net, params = from_torch(m)
    x = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_allclose(net.apply(params, x.numpy()), m(x).detach().numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        network_empirical_ntk(net, params, x.numpy(), trace=False), torch_ntk(m, x.numpy()), atol=1e-12
    )


@pytest.mark.parametrize(
    "module, X",
    [
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)), np.ones((4, 3))),
        (lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1)), np.ones((4, 1, 6))),
    ],
)
def test_train_names_what_trains_a_module_it_cannot(module, X):
    """from_torch imports these (as a Network); ntksolve.torch.train runs MLP modules only, and says
    so and what to use, rather than that ntksolve cannot import the LayerNorm or the Conv1d."""
    m = module().double()
    from_torch(m, **({"input_shape": X.shape[1:]} if X.ndim == 3 else {}))
    with pytest.raises(ValueError, match=r"trains MLP modules.*ntksolve.train_network") as exc:
        train(m, X, np.zeros(4), optimizer=functools.partial(torch.optim.SGD, lr=0.1), steps=1)
    assert "is not supported" not in str(exc.value)


def test_export_names_a_layer_it_cannot_write():
    """conv_to_torch took every layer it did not know for an activation (AttributeError on
    the digits CNN's Reshape, IndexError on an affine LayerNorm read as a Dense): now a ValueError
    naming the layer; the CNN without its Reshape is written, equal to the network."""
    from ntksolve import LayerNorm, Network
    from ntksolve.cnn import digits_cnn
    from ntksolve.nets.conv import Conv2D
    from ntksolve.nets.layers import Dense
    from ntksolve.nets.pooling import GlobalAvgPool
    from ntksolve.torch import to_torch

    net = digits_cnn(3)
    params = net.init(64, random_state=0)
    with pytest.raises(ValueError, match=r"layer 0 \(Reshape\) has no PyTorch counterpart.*net.layers\[1:\]"):
        to_torch(net, params, input_shape=(64,))
    X = np.random.default_rng(0).standard_normal((2, 64))
    m = to_torch(Network(net.layers[1:]), params[1:], input_shape=(8, 8, 1))
    np.testing.assert_allclose(
        m(torch.from_numpy(X.reshape(2, 1, 8, 8))).detach().numpy(), net.apply(params, X), rtol=0, atol=1e-13
    )
    ln = Network([Conv2D(2, 3), "relu", GlobalAvgPool(), Dense(3), LayerNorm(affine=True), Dense(1)])
    with pytest.raises(ValueError, match=r"layer 4 \(LayerNorm\) has no PyTorch counterpart"):
        to_torch(ln, ln.init((4, 4, 1), random_state=0), input_shape=(4, 4, 1))


def test_a_flatten_at_the_output_is_refused_where_the_orders_differ():
    """nn.Flatten of NCHW orders features channel-major, ntksolve's Flatten channels last; with no
    Linear after it to permute, the imported network's (and the exported module's) outputs were the
    module's permuted, silently. Refused; one channel (the same order) is still exact."""
    from ntksolve import Network
    from ntksolve.nets.conv import Conv2D
    from ntksolve.nets.pooling import Flatten
    from ntksolve.torch import to_torch

    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="outputs would be permuted"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten()).double(), input_shape=(1, 3, 3))
    m = nn.Sequential(nn.Conv2d(1, 1, 2), nn.ReLU(), nn.Flatten()).double()
    net, params = from_torch(m, input_shape=(1, 3, 3))
    X = to_channels_last(x.numpy())
    np.testing.assert_allclose(net.apply(params, X), m(x).detach().numpy(), rtol=0, atol=1e-13)
    two = Network([Conv2D(2, 2), "relu", Flatten()])
    with pytest.raises(ValueError, match="outputs would be permuted"):
        to_torch(two, two.init((3, 3, 1), random_state=0), input_shape=(3, 3, 1))
    one = Network([Conv2D(1, 2), "relu", Flatten()])
    p1 = one.init((3, 3, 1), random_state=0)
    back = to_torch(one, p1, input_shape=(3, 3, 1))
    np.testing.assert_allclose(back(x).detach().numpy(), one.apply(p1, X), rtol=0, atol=1e-13)

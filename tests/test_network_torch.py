"""PyTorch import/export of layered networks: the module's function and torch.func's NTK, exactly."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ntksolve import empirical_ntk, jacobian  # noqa: E402
from ntksolve.nets.network import Network  # noqa: E402
from ntksolve.torch import Residual, from_torch, to_torch  # noqa: E402


def torch_ntk(module, X):
    """sum_p df_a(x)/dp df_b(x')/dp over the module's parameters, by torch.func."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    x = torch.from_numpy(X)

    def f(p, xi):
        return torch.func.functional_call(module, p, (xi[None],))[0]

    jac = torch.func.vmap(torch.func.jacrev(f), (None, 0))(params, x)
    flat = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)
    return torch.einsum("iap,jbp->ijab", flat, flat).numpy()


def modules():
    torch.manual_seed(0)
    ln_affine = nn.LayerNorm(6)
    with torch.no_grad():  # trained-looking gamma, beta
        ln_affine.weight.add_(0.3 * torch.randn(6))
        ln_affine.bias.add_(0.2 * torch.randn(6))
    return {
        "layernorm_mlp": nn.Sequential(
            nn.Linear(4, 6),
            ln_affine,
            nn.ReLU(),
            nn.Linear(6, 6, bias=False),
            nn.LayerNorm(6, elementwise_affine=False, eps=1e-3),
            nn.Tanh(),
            nn.Linear(6, 2),
        ),
        "resnet": nn.Sequential(
            nn.Linear(4, 5),
            Residual(nn.GELU(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5)),
            nn.Sequential(Residual(nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 5)), scale=0.3)),
            nn.ReLU(),
            nn.Linear(5, 3),
        ),
    }


@pytest.mark.parametrize("name", ["layernorm_mlp", "resnet"])
def test_imported_network_has_the_module_function_and_ntk(name):
    module = modules()[name].double()
    X = np.random.default_rng(0).standard_normal((5, 4))
    net, params = from_torch(module)
    assert isinstance(net, Network) and net.parameterization == "standard"
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(net.apply(params, X), out, rtol=1e-13, atol=1e-14)
    ref = torch_ntk(module, X)
    np.testing.assert_allclose(empirical_ntk(net, params, X, trace=False), ref, rtol=1e-11, atol=1e-11)
    J = jacobian(net, params, X)
    np.testing.assert_allclose(np.einsum("iap,jbp->ijab", J, J), ref, rtol=1e-11, atol=1e-11)
    back = to_torch(net, params)
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(X)).numpy(), out, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(torch_ntk(back, X), ref, rtol=1e-11, atol=1e-11)


def test_import_refusals_name_the_module():
    with pytest.raises(ValueError, match=r"module\[1\] \(LayerNorm\).*last axis"):
        from_torch(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm((2, 3)), nn.Linear(6, 1)))
    with pytest.raises(ValueError, match=r"module\[1\].block \(Conv1d\)"):
        from_torch(nn.Sequential(nn.Linear(4, 4), Residual(nn.Conv1d(1, 1, 1)), nn.LayerNorm(4), nn.Linear(4, 1)))
    with pytest.raises(ValueError, match="no parameters in its block"):
        from_torch(nn.Sequential(nn.Linear(4, 4), Residual(nn.ReLU()), nn.Linear(4, 1)))

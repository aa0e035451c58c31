"""``nn.Sequential`` MLPs <-> ntksolve networks, exactly.

PyTorch's ``nn.Linear`` computes ``z = W~ h + b~`` and trains ``(W~, b~)`` (``weight``, ``bias``):
the standard parameterisation of the conventions. :func:`from_torch` therefore returns
``MLP(..., parameterization="standard", weight_std=1, bias_std=1)`` with the stored parameters

    W = sqrt(n_in) * weight        b = bias

a pure rescale (see :mod:`ntksolve.nets.trained_layers`). The network computes the module's function to
rounding, and its empirical NTK (:func:`ntksolve.empirical_ntk`) is the one PyTorch's autograd
defines over the module's own parameters,
``Theta_ab(x, x') = sum_p df_a(x)/dp df_b(x')/dp`` summed over every ``weight`` and ``bias`` --
whatever initialisation produced them (PyTorch's default ``kaiming_uniform_`` or any other), since
the kernel is evaluated at the parameters the module holds.

What is imported, and what is refused (never approximated):

- ``nn.Linear`` layers, chained, with or without a bias (``bias=False``: the ntksolve layer has
  no bias either, so nothing of it is trained or enters the NTK); any mix of the two.
- between consecutive Linears, at most one element-wise activation, the same one everywhere
  (ntksolve's MLP has one activation): ``ReLU``, ``Tanh``, ``Sigmoid``, ``GELU``
  (``approximate="none"``), ``Softplus`` (``beta=1``, ``threshold >= 20``, see below),
  :class:`Erf`; none at all is the identity activation.
- no-ops, dropped: ``nn.Identity``, dropout modules in eval mode or with ``p=0``.
- nested ``nn.Sequential`` containers are flattened.
- the first and the last layer must be Linear (apply an output activation yourself: e.g.
  ``CrossEntropyLoss`` takes the logits).
- anything else -- convolutions, normalisation, dropout in training mode, other activations,
  custom modules, hooks, parametrisations, frozen parameters mixed with trainable ones, float16 or
  bfloat16 -- is a ``ValueError`` naming the module's position (``module[2]``, nested
  ``module[1][0]``) and class.

Softplus: ntksolve's ``softplus(z) = log(1 + e^z)`` is computed without overflow everywhere;
PyTorch's ``Softplus(threshold=t)`` returns ``z`` itself where ``z > t``, which differs by
``log1p(e^-z) <= log1p(e^-t)``: 2.1e-9 at the default ``t = 20`` (below float32's rounding, not
below float64's), 4e-18 at ``t = 40``. :func:`to_torch` writes ``t = 20`` for float32 and
``t = 40`` for float64, where the two agree to rounding.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from ntksolve._extras import require
from ntksolve.nets.layers import Activation
from ntksolve.nets.trained_layers import layers_from_mlp, mlp_from_layers
from ntksolve.nets.mlp import MLP

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["from_torch", "to_torch", "Erf"]

#: Softplus thresholds: the smallest accepted, and what :func:`to_torch` writes per dtype (where
#: ``log1p(e^-t)`` is below half an ulp of ``t``, so PyTorch's switch to ``z`` is invisible).
SOFTPLUS_MIN_THRESHOLD = 20.0
_SOFTPLUS_THRESHOLD = {torch.float32: 20.0, torch.float64: 40.0}

_FLOAT_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


class Erf(nn.Module):
    """The element-wise ``erf`` activation as a module (PyTorch ships none); :func:`to_torch`
    writes it for ``activation="erf"`` and :func:`from_torch` reads it."""

    def forward(self, x):
        """``erf(x)``, element-wise."""
        return torch.erf(x)


def _plain(m, cls) -> bool:
    """``m`` is a ``cls`` whose forward is ``cls``'s own (a subclass may compute anything)."""
    return isinstance(m, cls) and type(m).forward is cls.forward


def _activation_name(m) -> Optional[str]:
    """ntksolve's name for an element-wise activation module, or None if ``m`` is not one."""
    if _plain(m, nn.ReLU):
        return "relu"
    if _plain(m, nn.LeakyReLU):
        return Activation(f"leaky_relu({float(m.negative_slope)!r})").name
    if _plain(m, nn.Tanh):
        return "tanh"
    if _plain(m, nn.Sigmoid):
        return "sigmoid"
    if _plain(m, nn.GELU):
        return "gelu"
    if _plain(m, nn.Softplus):
        return "softplus"
    if _plain(m, Erf):
        return "erf"
    return None


def _check_activation_options(m, where: str) -> None:
    cls = type(m).__name__
    if isinstance(m, nn.GELU) and m.approximate != "none":
        raise ValueError(
            f"{where} ({cls}) uses approximate={m.approximate!r}, which is not supported: ntksolve's "
            "gelu is the exact x*Phi(x); use nn.GELU() (approximate='none')"
        )
    if isinstance(m, nn.Softplus):
        if m.beta != 1:
            raise ValueError(
                f"{where} ({cls}) has beta={m.beta}, which is not supported: ntksolve's softplus is "
                "log(1 + e^z) (beta=1)"
            )
        if not m.threshold >= SOFTPLUS_MIN_THRESHOLD:
            raise ValueError(
                f"{where} ({cls}) has threshold={m.threshold}: PyTorch returns z above the "
                f"threshold, which differs from ntksolve's log(1 + e^z) by up to "
                f"log1p(e^-threshold); use threshold >= {SOFTPLUS_MIN_THRESHOLD:g} (the default 20)"
            )


def _is_noop(m) -> bool:
    """Modules that compute the identity as configured: ``nn.Identity``, inactive dropout."""
    if _plain(m, nn.Identity):
        return True
    # PyTorch's own dropout classes only (a subclass may compute anything)
    if isinstance(m, nn.modules.dropout._DropoutNd) and type(m).__module__ == nn.modules.dropout.__name__:
        return (not m.training) or m.p == 0
    return False


_HOOK_ATTRS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _check_readable(m, where: str) -> None:
    """Refuse what would make the module compute (or differentiate) other than its class says."""
    cls = type(m).__name__
    # before the hooks: a lazy module's initialiser is a forward pre-hook
    if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
        raise ValueError(
            f"{where} ({cls}) has uninitialised parameters (a lazy module): run one forward pass "
            "first so that they have shapes"
        )
    if torch.nn.utils.parametrize.is_parametrized(m):
        raise ValueError(
            f"{where} ({cls}) has parametrizations (e.g. weight_norm or spectral_norm), so its "
            "trained parameters are not its weight and bias: not supported; remove them with "
            "torch.nn.utils.parametrize.remove_parametrizations(module, 'weight') first"
        )
    for attr in _HOOK_ATTRS:
        if getattr(m, attr, None):
            raise ValueError(
                f"{where} ({cls}) has {attr.strip('_').replace('_', ' ')} registered, which can "
                "change its outputs or gradients: not supported; remove them (handle.remove())"
            )


def _check_no_global_hooks() -> None:
    mod = torch.nn.modules.module
    for attr in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        if getattr(mod, attr, None):
            raise ValueError(
                f"global module hooks ({attr.strip('_').replace('_', ' ')}) are registered; they "
                "can change every module's outputs or gradients, so the module cannot be imported "
                "exactly; remove them first"
            )


def _leaves(module, where: str):
    """``(where, leaf)`` for every module of a (nested) Sequential, in forward order."""
    _check_readable(module, where)
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise ValueError(
                f"{where} ({type(module).__name__}) overrides Sequential.forward, which ntksolve "
                "cannot read: not supported; use a plain nn.Sequential"
            )
        for i, child in enumerate(module):
            yield from _leaves(child, f"{where}[{i}]")
    else:
        yield where, module


class _Reading(NamedTuple):
    """A module read as an MLP: its Linear layers (tensors), activation and dtype."""

    linears: List[Tuple[str, object]]  # (where, nn.Linear)
    activation: str
    dtype: object  # torch dtype
    n_features: int
    n_outputs: int


_SUPPORTED = (
    "nn.Linear, the element-wise activations ReLU, LeakyReLU, Tanh, Sigmoid, GELU (approximate='none'), "
    "Softplus (beta=1), ntksolve.torch.Erf, and the no-ops Identity and Dropout in eval mode "
    "(or p=0), in nested nn.Sequential containers"
)


def _read(module) -> _Reading:
    """Check ``module`` and read its structure (no data copied)."""
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module (an nn.Sequential of Linear layers and "
            f"activations), got {type(module).__name__}"
        )
    if not (isinstance(module, nn.Sequential) or _plain(module, nn.Linear)):
        raise TypeError(
            f"module must be an nn.Sequential (or a single nn.Linear); got {type(module).__name__}, "
            "whose forward ntksolve cannot read (it could compute any graph): rebuild the network "
            "as nn.Sequential(nn.Linear(...), nn.ReLU(), ..., nn.Linear(...))"
        )
    _check_no_global_hooks()
    items = list(_leaves(module, "module"))
    # kinds: ("linear", where, m) or ("act", where, m, name); no-ops dropped
    seq = []
    for where, m in items:
        if _plain(m, nn.Linear):
            seq.append(("linear", where, m))
        elif _activation_name(m) is not None:
            seq.append(("act", where, m, _activation_name(m)))
        elif _is_noop(m):
            continue
        else:
            seq.append(("other", where, m))
    lin_idx = [i for i, s in enumerate(seq) if s[0] == "linear"]
    if not lin_idx:
        raise ValueError(
            f"the module contains no nn.Linear layer, so it is not an MLP ntksolve can import "
            f"(it supports {_SUPPORTED})"
        )
    trailing = (
        "ntksolve's network ends with a Linear layer, so the last layer must be nn.Linear; "
        "remove the trailing module and apply it to the outputs yourself (CrossEntropyLoss "
        "and BCEWithLogitsLoss take logits)"
    )
    # an unsupported module is the root cause wherever it is; then a supported one out of place
    for i, s in enumerate(seq):
        if s[0] == "other":
            if isinstance(s[2], nn.modules.dropout._DropoutNd):
                what = (
                    "dropout in training mode is random, so the module has no fixed function; "
                    "call module.eval() to import it without dropout"
                )
            else:
                what = trailing if i > lin_idx[-1] else f"ntksolve imports {_SUPPORTED}"
            raise ValueError(f"{s[1]} ({type(s[2]).__name__}) is not supported: {what}")
    for s in seq[lin_idx[-1] + 1 :]:
        raise ValueError(f"{s[1]} ({type(s[2]).__name__}) follows the last nn.Linear: {trailing}")
    if lin_idx[0] != 0:
        s = seq[0]
        raise ValueError(
            f"{s[1]} ({type(s[2]).__name__}) comes before the first nn.Linear: ntksolve's network "
            "starts with a Linear layer (apply the activation to the inputs yourself)"
        )
    # the hidden activations, one per gap between consecutive Linears
    activation, first_where = None, None
    for a, b in zip(lin_idx[:-1], lin_idx[1:]):
        gap = seq[a + 1 : b]
        if len(gap) > 1:
            raise ValueError(
                f"{gap[0][1]} ({type(gap[0][2]).__name__}) and {gap[1][1]} ({type(gap[1][2]).__name__}) "
                "are two activations in a row, which ntksolve's MLP (one activation per hidden "
                "layer) cannot represent"
            )
        if gap:
            _check_activation_options(gap[0][2], gap[0][1])
        name = gap[0][3] if gap else "identity"
        where = (
            gap[0][1] + f" ({type(gap[0][2]).__name__})"
            if gap
            else f"the gap between {seq[a][1]} and {seq[b][1]} (no activation: identity)"
        )
        if activation is None:
            activation, first_where = name, where
        elif name != activation:
            raise ValueError(
                f"{where} differs from the first hidden activation, {first_where}: ntksolve's MLP "
                "has one activation shared by all hidden layers"
            )
    linears = [(seq[i][1], seq[i][2]) for i in lin_idx]
    state = {}
    prev = None
    for where, lin in linears:
        for pname, p in lin.named_parameters(recurse=False):
            _check_parameter(p, f"{where}.{pname}", state)
        if prev is not None and lin.in_features != prev[1].out_features:
            raise ValueError(
                f"{where} (Linear) has in_features={lin.in_features}, but {prev[0]} (Linear) before it "
                f"has out_features={prev[1].out_features}: the module cannot run"
            )
        prev = (where, lin)
    dtype = state["dtype"]
    return _Reading(linears, activation or "identity", dtype, linears[0][1].in_features, linears[-1][1].out_features)


def _check_parameter(p, where: str, state: dict) -> None:
    """Refuse a parameter ntksolve cannot import exactly; ``state`` carries what the earlier ones
    set (``"dtype"``, and ``"grads"``: their ``requires_grad`` flags) across one module."""
    if isinstance(p, nn.parameter.UninitializedParameter):
        raise ValueError(f"{where} is uninitialised (a lazy module): run one forward pass first so that it has a shape")
    if p.device.type == "meta":
        raise ValueError(f"{where} is on the meta device (no values); materialise it first (module.to_empty(...))")
    if p.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"{where} is {p.dtype}: ntksolve computes in float32 or float64 (half precision would not be "
            "imported exactly); convert with module.double() or module.float()"
        )
    if state.setdefault("dtype", p.dtype) != p.dtype:
        raise ValueError(
            f"{where} is {p.dtype} but earlier parameters are {state['dtype']}: all parameters must share "
            "one dtype (module.double() or module.float())"
        )
    grads = state.setdefault("grads", set())
    grads.add(bool(p.requires_grad))
    if len(grads) > 1:
        raise ValueError(
            "some parameters have requires_grad=False (frozen) and others not: PyTorch's NTK over the "
            "trainable parameters would then omit the frozen ones, but ntksolve's network trains every "
            "parameter; unfreeze them (module.requires_grad_(True))"
        )


def _numpy(t) -> np.ndarray:
    """A numpy view (CPU) or copy (other devices) of a tensor's values."""
    return t.detach().cpu().numpy()


def from_torch(module):
    """Import an ``nn.Sequential`` MLP as an ntksolve network, exactly.

    Parameters
    ----------
    module : torch.nn.Sequential (nested allowed) or torch.nn.Linear
        ``nn.Linear`` layers (with or without biases), separated by one shared element-wise activation (see
        the module docstring), parameters float32 or float64 on any device. Not modified.

    Returns
    -------
    net : MLP
        ``MLP(widths, activation, weight_std=1, bias_std=1, parameterization="standard",
        n_outputs=k, bias=...)``, ``bias`` the Linears' flags (``True`` when all have one).
    params : list of (W, b)
        Fresh arrays in the module's dtype: ``W = sqrt(n_in) * weight``, ``b = bias`` per layer
        (shapes ``(n_out, n_in)`` and ``(n_out,)``; ``(0,)`` for a Linear with ``bias=False``).

    Notes
    -----
    ``net.apply(params, X)`` equals ``module(X)`` to rounding, and
    ``ntksolve.empirical_ntk(net, params, X)`` is the empirical NTK PyTorch's autograd defines
    over the module's own parameters (standard parameterisation, at whatever values its
    initialisation -- PyTorch's own, by default -- gave them). Training ``module`` in PyTorch
    with ``torch.optim.SGD`` follows the closed forms of :func:`ntksolve.gradient_descent_mse`
    for the linearised network, with the learning rate of :func:`learning_rate_from_torch`.

    Raises
    ------
    TypeError
        ``module`` is not an ``nn.Sequential`` or ``nn.Linear``.
    ValueError
        A module that cannot be imported exactly, named by position and class (see the module
        docstring); no Linear layer; half precision.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    >>> net, params = from_torch(m.double())
    >>> net.hidden_layer_sizes, net.activation, net.parameterization
    ((16,), 'tanh', 'standard')
    """
    reading = _read(module)
    layers = [
        (_numpy(lin.weight), None if lin.bias is None else _numpy(lin.bias), where) for where, lin in reading.linears
    ]
    return mlp_from_layers(layers, reading.activation)


def _activation_module(name: str, dtype):
    """The PyTorch module computing ntksolve's activation ``name``, or a ValueError if there is none."""
    phi = Activation(name)
    if phi.family == "abrelu" and phi.params[1] == 1.0:  # leaky relu, and abs = LeakyReLU(-1)
        return nn.LeakyReLU(negative_slope=phi.params[0])
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "gelu":
        return nn.GELU()
    if name == "softplus":
        return nn.Softplus(threshold=_SOFTPLUS_THRESHOLD[dtype])
    if name == "erf":
        return Erf()
    if name == "identity":
        return nn.Identity()
    raise ValueError(
        f"activation {name!r} has no PyTorch module, so to_torch cannot write the network: it writes "
        "ReLU, LeakyReLU (leaky_relu, abs, abrelu(a, 1)), Tanh, Sigmoid, GELU, Softplus, Erf and Identity"
    )


def to_torch(net: MLP, params):
    """An ``nn.Sequential`` computing ``net.apply(params, .)``, to rounding.

    Parameters
    ----------
    net : MLP
        Either parameterisation; the scales ``(sigma_w/sqrt(n_in), sigma_b)`` are folded into
        each layer's ``weight`` and ``bias``.
    params : list of (W, b)
        float32 or float64; the module gets fresh tensors of that dtype (on the CPU).

    Returns
    -------
    module : torch.nn.Sequential
        ``Linear, act, Linear, ..., Linear`` (``bias=False`` for a layer of ``net`` without a
        bias); activation modules ``ReLU``, ``LeakyReLU`` (``leaky_relu``, ``abs`` as
        ``LeakyReLU(-1)``, ``abrelu(a, 1)``), ``Tanh``, ``Sigmoid``,
        ``GELU()``, ``Softplus(threshold=20 or 40)`` (float32 / float64, see the module docstring),
        :class:`Erf`, or ``Identity``. Building it does not draw from torch's random generator.

    Raises
    ------
    ValueError
        For an activation PyTorch has no module for (sin, cos, gaussian, the monomials,
        ``abrelu(a, b)`` with ``b != 1``).

    Notes
    -----
    The function is the same, but PyTorch trains ``weight`` and ``bias``: the module's NTK is
    ``net``'s *standard*-parameterisation NTK, and for an NTK-parameterised ``net`` it differs from
    ``empirical_ntk(net, params, X)``. ``from_torch(to_torch(net, params))`` is the standard
    network with ``weight_std = bias_std = 1`` computing the same function.
    """
    layers = layers_from_mlp(net, params)
    dtype = torch.float64 if layers[0][0].dtype == np.float64 else torch.float32
    if net.depth:
        _activation_module(net.activation, dtype)  # a ValueError before any tensor is made
    mods = []
    for l, (weight, bias) in enumerate(layers):
        n_out, n_in = weight.shape
        # Built on the meta device so that no initialisation runs (nor draws from torch's RNG);
        # both parameters are then replaced by tensors owning the fresh arrays.
        lin = nn.Linear(n_in, n_out, bias=bias is not None, device="meta", dtype=dtype)
        lin.weight = nn.Parameter(torch.from_numpy(weight))
        if bias is not None:
            lin.bias = nn.Parameter(torch.from_numpy(bias))
        mods.append(lin)
        if l < net.depth:
            mods.append(_activation_module(net.activation, dtype))
    return nn.Sequential(*mods)

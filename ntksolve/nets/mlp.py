"""The fully connected network of the conventions: its specification, initialisation and forward pass.

NTK parameterisation (the default)::

    z^1     = (sigma_w / sqrt(n_0)) W^1 x       + sigma_b b^1
    h^l     = phi(z^l)                              l = 1 ... L
    z^{l+1} = (sigma_w / sqrt(n_l)) W^{l+1} h^l + sigma_b b^{l+1}
    f(x)    = z^{L+1}

with every entry of ``W^l`` and ``b^l`` drawn i.i.d. N(0, 1). In standard parameterisation the same
function is computed, but the trained parameters are the scaled ``W~ = (sigma_w/sqrt(n)) W`` and
``b~ = sigma_b b``, which changes the gradient and so the NTK (``docs/conventions.md``).

An :class:`MLP` is ``L + 1`` :class:`~ntksolve.nets.layers.Dense` layers with an
:class:`~ntksolve.nets.layers.Activation` after each hidden one; every per-layer number (forward,
gradient and training scales) comes from those layer descriptions.
"""

from __future__ import annotations

import numbers
from typing import List, Sequence, Tuple

import numpy as np

from ntksolve._jit import empirical as _jit
from ntksolve._validation import check_dtype, check_forward_finite, check_inputs
from ntksolve.nets.layers import ACTIVATIONS, PARAMETERIZATIONS, Activation, Dense, LayerScales, check_width  # noqa: F401 (the first two re-exported)

Params = List[Tuple[np.ndarray, np.ndarray]]


class MLP:
    """A fully connected network ``d -> n_1 -> … -> n_L -> k`` as in the conventions.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int
        Hidden widths ``(n_1, ..., n_L)``; may be empty (a linear model). Each must be positive.
    activation : str, default "relu"
        One of ``ACTIVATIONS``: relu, erf, tanh, identity, sigmoid, gelu (exact ``x Phi(x)``),
        softplus, leaky_relu, abs, sin, cos, gaussian (``exp(-x^2/2)``); or one with arguments,
        ``"leaky_relu(slope)"``, ``"abrelu(a, b)"`` (``a min(x, 0) + b max(x, 0)``),
        ``"monomial(n)"`` (``x^n``, ``1 <= n <= 8``); see :class:`~ntksolve.nets.layers.Activation`.
    weight_std : float, default 1.0
        ``sigma_w > 0``.
    bias_std : float, default 0.0
        ``sigma_b >= 0``.
    parameterization : {"ntk", "standard"}, default "ntk"
    n_outputs : int, default 1
        ``k``, the number of outputs.
    bias : bool or sequence of bool, default True
        Whether the layers have biases: one flag for all, or one per layer (``L + 1`` flags, the
        readout last). A layer without a bias has no ``b`` (its entry in ``params`` is an empty
        array of shape ``(0,)``): it is not trained and counts in no kernel, Jacobian or
        parameter count. An MLP without any bias has the analytic kernels of ``bias_std = 0``.

    Attributes
    ----------
    layers : tuple of Dense
        The ``L + 1`` dense layers, ``layers[l - 1]`` computing ``z^l``; the last is the readout.
    phi : Activation
        The activation applied after every hidden layer.

    Examples
    --------
    >>> net = MLP((512, 512), activation="erf", bias_std=0.1)
    >>> params = net.init(n_features=8, random_state=0)
    >>> net.apply(params, np.ones((3, 8))).shape
    (3, 1)
    """

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (512,),
        activation: str = "relu",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        parameterization: str = "ntk",
        n_outputs: int = 1,
        bias=True,
    ) -> None:
        if isinstance(hidden_layer_sizes, numbers.Integral):
            hidden_layer_sizes = (hidden_layer_sizes,)
        try:
            sizes = tuple(hidden_layer_sizes)
        except TypeError as exc:
            raise ValueError(
                f"hidden_layer_sizes must be a sequence of positive ints, got {hidden_layer_sizes!r}"
            ) from exc
        for n in sizes:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
                raise ValueError(f"hidden_layer_sizes must contain positive ints (layer widths), got {sizes!r}")
        self.phi = Activation(activation)
        k = check_width(n_outputs, "n_outputs")
        flags = _bias_flags(bias, len(sizes) + 1)
        self.layers: Tuple[Dense, ...] = tuple(
            Dense(n, weight_std, bias_std, parameterization, bias=has) for n, has in zip(sizes + (k,), flags)
        )
        self.hidden_layer_sizes = tuple(int(n) for n in sizes)
        self.activation = self.phi.name  # canonical spelling: "leaky_relu( 0.2 )" -> "leaky_relu(0.2)"
        self.weight_std = self.layers[-1].weight_std
        self.bias_std = self.layers[-1].bias_std
        self.parameterization = parameterization
        self.n_outputs = k
        #: ``True``/``False`` when every layer agrees, else the per-layer flags (as given)
        self.bias = flags[0] if len(set(flags)) == 1 else flags
        self._scales = {}

    # -- description -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"MLP(hidden_layer_sizes={self.hidden_layer_sizes}, activation={self.activation!r}, "
            f"weight_std={self.weight_std}, bias_std={self.bias_std}, "
            f"parameterization={self.parameterization!r}, n_outputs={self.n_outputs}"
            f"{'' if self.bias is True else f', bias={self.bias!r}'})"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, MLP) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        # the config holds a list (JSON has no tuples), so hash its values with the sizes as a tuple
        return hash(tuple(tuple(v) if isinstance(v, list) else v for v in self.get_config().values()))

    def get_config(self) -> dict:
        """The constructor arguments as a JSON-serialisable dict (``MLP(**cfg)`` rebuilds it).

        ``"bias"`` is there only when some layer has no bias (so that a network with biases
        everywhere has the config, and the hash, it always had)."""
        cfg = {
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "activation": self.activation,
            "weight_std": self.weight_std,
            "bias_std": self.bias_std,
            "parameterization": self.parameterization,
            "n_outputs": self.n_outputs,
        }
        if self.bias is not True:
            cfg["bias"] = self.bias if self.bias is False else list(self.bias)
        return cfg

    @property
    def depth(self) -> int:
        """``L``, the number of hidden layers."""
        return len(self.hidden_layer_sizes)

    @property
    def activation_code(self) -> int:
        return self.phi.code

    @property
    def activation_params(self) -> Tuple[float, float]:
        """The activation's parameters as the jitted kernels take them (:class:`Activation`)."""
        return self.phi.params

    @property
    def supports_analytic(self) -> bool:
        """Whether the infinite-width (analytic) kernels exist: NTK parameterisation only."""
        return all(layer.has_infinite_width_limit for layer in self.layers)

    def widths(self, n_features: int) -> Tuple[int, ...]:
        """``(n_0, n_1, ..., n_L, k)`` with ``n_0 = n_features``."""
        return (int(n_features),) + tuple(layer.width for layer in self.layers)

    def n_params(self, n_features: int) -> int:
        """``P``, the number of trainable parameters (weights, and the biases of the layers that have one)."""
        return int(sum(np.prod(Ws) + bs[0] for Ws, bs in self._param_shapes(n_features)))

    def scales(self, n_features: int) -> Tuple[LayerScales, ...]:
        """Every layer's :class:`~ntksolve.nets.layers.LayerScales` (forward, gradient, training)."""
        # Kept per input width: every forward and backward pass asks, and a training step at
        # small sizes is a few tens of microseconds.
        cached = self._scales.get(n_features)
        if cached is None:
            w = self.widths(n_features)
            cached = self._scales[n_features] = tuple(layer.scales(n_in) for layer, n_in in zip(self.layers, w))
        return cached

    def layer_scales(self, n_features: int) -> Tuple[Tuple[float, float], ...]:
        """Per layer ``(weight_scale, bias_scale) = (sigma_w/sqrt(n_{l-1}), sigma_b)`` of the forward pass."""
        return tuple((s.weight, s.bias) for s in self.scales(n_features))

    def ntk_coefficients(self, n_features: int) -> Tuple[Tuple[float, float], ...]:
        """Per layer ``(c_l, beta_l)`` of the NTK's term ``<delta^l, delta^l'> (c_l <h^{l-1}, h^{l-1}'> + beta_l)``."""
        return tuple(s.ntk_coefficients for s in self.scales(n_features))

    def trainable(self) -> "MLP":
        """This network, or one that trains identically and whose stored parameters carry the trained ones.

        In standard parameterisation with ``bias_std = 0`` the trained bias ``b~ = 0 * b`` cannot
        live in the stored ``b``. There ``bias_std`` only sets the initial draw (``b~ = 0`` at the
        start either way), never the gradient or the NTK, so the network with ``bias_std = 1`` and
        ``b = 0`` computes and trains exactly the same function.
        """
        if all(layer.stores_trained_bias for layer in self.layers):
            return self
        return MLP(**{**self.get_config(), "bias_std": 1.0})

    def _param_shapes(self, n_features: int):
        w = self.widths(n_features)
        return [layer.param_shapes(n_in) for layer, n_in in zip(self.layers, w)]

    # -- parameters --------------------------------------------------------------------------
    def init(self, n_features: int, random_state=None, dtype=np.float64) -> Params:
        """Draw the parameters: every entry of every ``W`` and ``b`` i.i.d. standard normal.

        Parameters
        ----------
        n_features : int
            ``d``, the input dimension.
        random_state : None, int or numpy.random.Generator / RandomState
        dtype : float64 (default) or float32

        Returns
        -------
        params : list of (W, b)
            One pair per layer ``l = 1 ... L+1``; ``W`` of shape ``(n_l, n_{l-1})``, ``b`` of shape ``(n_l,)``.
        """
        check_width(n_features, "n_features")
        dt = check_dtype(dtype)
        rng = _as_generator(random_state)
        return [
            (rng.standard_normal(Ws).astype(dt, copy=False), rng.standard_normal(bs).astype(dt, copy=False))
            for Ws, bs in self._param_shapes(n_features)
        ]

    def check_params(self, params, n_features: int | None = None) -> Tuple[int, np.dtype]:
        """Validate a parameter list against this network; return ``(n_features, dtype)``."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            raise ValueError(
                f"params must be a list of {len(self.layers)} (W, b) pairs for this network "
                f"(one per layer), got {type(params).__name__} of length "
                f"{len(params) if hasattr(params, '__len__') else '?'}; create them with net.init(...)"
            )
        W1 = np.asarray(params[0][0])
        if W1.ndim != 2:
            raise ValueError(f"params[0][0] (W^1) must be 2-D, got shape {W1.shape}")
        d = W1.shape[1]
        if n_features is not None and d != n_features:
            raise ValueError(
                f"X has {n_features} features, but the network's parameters expect {d} (W^1 has shape {W1.shape})"
            )
        dt = W1.dtype
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"parameters must be float64 or float32, got {dt}")
        for l, (pair, (Ws, bs)) in enumerate(zip(params, self._param_shapes(d))):
            if len(pair) != 2:
                raise ValueError(f"params[{l}] must be a (W, b) pair")
            if not (isinstance(pair[0], np.ndarray) and isinstance(pair[1], np.ndarray)):
                # the passes use them as they are (W.T, in-place products): lists would fail there
                raise TypeError(
                    f"params[{l}] must be a pair of numpy arrays (W, b), got ({type(pair[0]).__name__}, "
                    f"{type(pair[1]).__name__}); convert them with np.asarray, or create them with net.init(...)"
                )
            W, b = pair
            if W.shape != Ws or b.shape != bs:
                raise ValueError(
                    f"layer {l + 1}: expected W of shape {Ws} and b of shape {bs}, got {W.shape} and {b.shape}"
                )
            if W.dtype != dt or b.dtype != dt:
                raise ValueError(f"all parameters must share one dtype ({dt}); layer {l + 1} differs")
            # A sum is non-finite whenever an entry is (NaN propagates, inf - inf is NaN) and is a
            # third of the cost of isfinite(); the exact test runs only to rule out an overflow.
            if not np.isfinite(W.sum() + b.sum()) and not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
                raise ValueError(f"layer {l + 1}'s parameters contain NaN or infinity")
        return d, dt

    def flatten_params(self, params) -> np.ndarray:
        """Parameters as one vector ``(P,)`` in the Jacobian's order: per layer ``W`` row-major, then ``b``."""
        return np.concatenate([np.concatenate([np.ravel(W), np.ravel(b)]) for W, b in params])

    def unflatten_params(self, theta: np.ndarray, n_features: int) -> Params:
        """Inverse of :meth:`flatten_params`."""
        theta = np.asarray(theta)
        if theta.shape != (self.n_params(n_features),):
            raise ValueError(f"theta must have shape ({self.n_params(n_features)},), got {theta.shape}")
        out, pos = [], 0
        for Ws, bs in self._param_shapes(n_features):
            nw = Ws[0] * Ws[1]
            W = theta[pos : pos + nw].reshape(Ws).copy()
            pos += nw
            b = theta[pos : pos + bs[0]].copy()
            pos += bs[0]
            out.append((W, b))
        return out

    # -- forward -----------------------------------------------------------------------------
    def apply(self, params, X) -> np.ndarray:
        """Network outputs ``f(X)``.

        Parameters
        ----------
        params : list of (W, b), from :meth:`init`
        X : array_like, shape (N, d)

        Returns
        -------
        f : ndarray, shape (N, k), in the parameters' dtype
        """
        d, dt = self.check_params(params)
        X = check_inputs(X, n_features=d, dtype=dt)
        return forward(self, params, X, keep=False)[0]


def require_mlp(net, what: str, instead: str = "") -> MLP:
    """``net`` if it is an :class:`MLP`, else a TypeError naming what ``what`` was given and the way
    out: for a :class:`~ntksolve.nets.network.Network` that is an MLP, its conversion; for any
    other, ``instead`` (the function that takes it), where there is one."""
    if isinstance(net, MLP):
        return net
    msg = f"{what} takes an ntksolve.MLP as net, got {type(net).__name__}"
    as_mlp = getattr(net, "as_mlp", None)  # a Network (duck-typed: nets.network sits above this module)
    if callable(as_mlp) and as_mlp() is not None:
        msg += "; this Network is an MLP: pass net.as_mlp() and Network.params_to_mlp(params)"
    elif instead:
        msg += f"; {instead}"
    raise TypeError(msg)


def _bias_flags(bias, n_layers: int) -> Tuple[bool, ...]:
    """One bias flag per layer from ``bias`` (one bool, or ``n_layers`` of them)."""
    if isinstance(bias, (bool, np.bool_)):
        return (bool(bias),) * n_layers
    try:
        flags = tuple(bias)
    except TypeError:
        raise TypeError(f"bias must be True, False or one bool per layer ({n_layers}), got {bias!r}") from None
    if not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise TypeError(f"bias must be True, False or one bool per layer ({n_layers}), got {bias!r}")
    if len(flags) != n_layers:
        raise ValueError(
            f"bias has {len(flags)} flags but the network has {n_layers} layers (the hidden ones and "
            f"the readout); give one per layer, or a single True/False for all"
        )
    return tuple(bool(f) for f in flags)


def _as_generator(random_state) -> np.random.Generator:
    """Accept None, an int seed, a Generator or a legacy RandomState (as scikit-learn passes)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, (numbers.Integral, np.integer)):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def layer_bias(layer: Dense, b: np.ndarray, dtype) -> np.ndarray:
    """The ``b`` a hidden layer's jitted pass reads: ``b``, or zeros for a layer without a bias
    (its bias scale is 0, and the kernel reads ``width`` entries)."""
    return b if layer.bias else np.zeros(layer.width, dtype=dtype)


def forward(net: MLP, params, X: np.ndarray, *, keep: bool = True, out=None):
    """Forward pass on validated, C-contiguous ``X`` of the parameters' dtype.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
    X : ndarray, shape (N, d)
    keep : bool, default True
        Keep every layer's input and activation derivative (what the backward pass needs).
    out : tuple (hs, dphis), optional
        With ``keep``: C-contiguous arrays to write into instead of fresh ones, ``hs`` the ``L``
        arrays ``h^1 ... h^L`` and ``dphis`` the ``L`` arrays ``phi'(z^l)``, each (N, n_l) in the
        parameters' dtype (row blocks of larger arrays, so that threads can fill one each).

    Returns
    -------
    f : ndarray, shape (N, k)
    hs : list of ndarray
        ``[h^0 = X, h^1, ..., h^L]`` (only when ``keep``; else empty).
    dphis : list of ndarray
        ``[phi'(z^1), ..., phi'(z^L)]``, each (N, n_l) (only when ``keep``); what
        :func:`~ntksolve.nets.backprop.backward` takes.
    """
    code, prm = net.phi.code, net.phi.params
    scales = net.scales(X.shape[1])
    h = X
    hs, dphis = ([X], []) if keep else ([], [])
    L = net.depth
    for l in range(L):
        W, b = params[l]
        s = scales[l]
        if out is None:
            pre = np.dot(h, W.T)  # BLAS GEMM; W.T is a transposed view, no copy
            h_new = np.empty_like(pre)
        else:
            pre, h_new = out[1][l], out[0][l]
            np.dot(h, W.T, out=pre)
        # phi'(z) overwrites the pre-activation it is computed from (each entry is read before it
        # is written): one fresh N x n array fewer per layer, and fresh arrays cost page faults.
        dphi = pre if keep else h_new  # not written when keep is False
        b = layer_bias(net.layers[l], b, pre.dtype)
        finite = _jit.bias_act(pre, b, pre.dtype.type(s.weight), pre.dtype.type(s.bias), code, prm, h_new, dphi, keep)
        check_forward_finite(finite, f"pre-activations of hidden layer {l + 1}", pre.dtype)
        if keep:
            dphis.append(dphi)
        h = h_new
        if keep:
            hs.append(h)
    W, b = params[L]
    s = scales[L]
    f = np.dot(h, W.T)
    f *= s.weight
    if net.layers[L].bias:
        f += s.bias * b
    return f, hs, dphis

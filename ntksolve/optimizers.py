"""The parameter-space steps of real training: ``torch.optim.SGD`` and ``Adam``/``AdamW`` on a list of ``(W, b)``.

:func:`ntksolve.train_network` hands every layer's backpropagated signal ``g^l = dL/dz^l`` (``(B, n_l)``)
and input ``h^{l-1}`` (``(B, n_{l-1})``) to :meth:`ParameterOptimizer.update`, which forms the raw
products ``G_W = (g^l)^T h^{l-1}`` and ``G_b = sum_i g^l_i`` and moves the stored ``(W, b)`` in place.
With the layer's :class:`~ntksolve.nets.layers.LayerScales` (``c`` = ``grad_weight``, ``t`` =
``trained_weight``, likewise for the bias) the *trained* parameter is ``θ~ = t W`` and its gradient
``c G_W``; the rules are PyTorch's on ``θ~``:

- SGD (:class:`~ntksolve.dynamics.rules.GradientDescent`): ``d = c G + w θ~``, ``u ← μ u + d``
  (``u_0 = 0``), direction ``u`` (heavy ball) or ``d + μ u`` (Nesterov), ``θ~ ← θ~ − η_s ·
  direction``. Every operation is linear, so it runs in stored units: the buffer holds ``u / t``,
  driven by ``(c/t) G + w W`` (``(c/t, ...)`` is :attr:`LayerScales.stored_step`), and the decay of
  ``θ~`` is the decay ``w W`` of the stored ``W``. Plain descent (``μ = w = 0``) is the one GEMM,
  one scale and one subtraction of the original trainer.
- Adam (:class:`~ntksolve.dynamics.adaptive.Adam`): not linear (``sqrt`` of the second moment), so
  its moments live in trained units: ``d = c G (+ w t W)``, ``m ← β1 m + (1 − β1) d``,
  ``v ← β2 v + (1 − β2) d²``, ``θ~ ← θ~ − (η/(1 − β1^s)) m / (sqrt(v)/sqrt(1 − β2^s) + eps)`` (as
  ``torch.optim.Adam`` computes it), and the stored ``W`` moves by ``1/t`` of that. AdamW's
  decoupled decay ``θ~ ← (1 − η w) θ~`` is the same factor on ``W``.

Buffers (momentum, moments) are allocated once; each step writes into two shared scratch arrays
of the largest layer's size, so a step allocates nothing parameter-sized.
"""

from __future__ import annotations

import numpy as np

from ntksolve.dynamics.adaptive import Adam
from ntksolve.dynamics.rules import GradientDescent, GradientFlow, TrainingRule

__all__ = ["ParameterOptimizer", "SGD", "AdamOptimizer", "parameter_optimizer", "training_rule"]


class ParameterOptimizer:
    """State and step of one rule over a network's stored parameters (updated in place).

    Parameters
    ----------
    params : list of (W, b)
        The working parameters (C-contiguous, one float dtype); moved in place.
    scales : list of LayerScales
        One per layer, of the network the parameters belong to.
    """

    def __init__(self, params, scales):
        self.params = params
        self.dtype = params[0][0].dtype
        self.scales = list(scales)
        size = max(W.size for W, _ in params)
        self._scratch = (np.empty(size, dtype=self.dtype), np.empty(size, dtype=self.dtype))
        self.eta = 0.0

    def _buffers(self, shape):
        n = int(np.prod(shape))
        return tuple(buf[:n].reshape(shape) for buf in self._scratch)

    def start_step(self, eta: float) -> None:
        """Begin a step at learning rate ``eta`` (before the layers' :meth:`update` calls)."""
        self.eta = float(eta)

    def update(self, i: int, g: np.ndarray, h: np.ndarray) -> None:
        """Move layer ``i``'s ``(W, b)`` from its signal ``g`` (B, n_out) and input ``h`` (B, n_in)."""
        raise NotImplementedError

    def update_products(self, i: int, G_W: np.ndarray, G_b: np.ndarray) -> None:
        """Move layer ``i``'s ``(W, b)`` from its raw products ``G_W`` (shaped like ``W``) and ``G_b``
        (like ``b``): what :meth:`update` forms as ``g^T h`` and ``sum_i g_i`` (a layer of another
        kind, e.g. a normalisation's ``gamma, beta``, forms its own)."""
        raise NotImplementedError


class SGD(ParameterOptimizer):
    """``torch.optim.SGD`` (dampening 0) in stored units; see the module docstring."""

    def __init__(self, rule: GradientDescent, params, scales):
        super().__init__(params, scales)
        self.mu, self.nesterov, self.wd = rule.momentum, rule.nesterov, rule.weight_decay
        self.steps = [s.stored_step for s in self.scales]  # (c/t) of W and of b
        self.momenta = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params] if self.mu else None

    def update(self, i, g, h):
        G, S = self._buffers(self.params[i][0].shape)
        # numpy's BLAS, not scipy's in-place GEMM: scipy ships a second OpenBLAS whose idle threads
        # spin against numpy's on every alternation (1.5x slower at N=512, width 2048, depth 2).
        np.dot(g.T, h, out=G)
        self._step(i, G, S, g, None)

    def update_products(self, i, G_W, G_b):
        G, S = self._buffers(self.params[i][0].shape)
        G[...] = G_W
        self._step(i, G, S, None, G_b)

    def _step(self, i, G, S, g, G_b):
        """The step from the weight product in ``G`` (overwritten) and the bias product ``G_b``
        (``sum_i g_i``, formed from ``g`` when needed)."""
        W, b = self.params[i]
        alpha, beta = self.steps[i]
        dt = self.dtype.type
        if not (self.mu or self.wd):
            G *= dt(self.eta * alpha)
            W -= G
            if beta != 0.0:
                b -= dt(self.eta * beta) * (g.sum(axis=0) if G_b is None else G_b)
            return
        G *= dt(alpha)
        gb = dt(beta) * (_bias_gradient(g, b) if G_b is None else G_b)
        if self.wd:
            np.multiply(W, dt(self.wd), out=S)
            G += S
            gb += dt(self.wd) * b
        if self.mu:
            U, ub = self.momenta[i]
            U *= dt(self.mu)
            U += G
            ub *= dt(self.mu)
            ub += gb
            if not self.nesterov:  # the direction is the buffer itself
                np.multiply(U, dt(self.eta), out=G)
                W -= G
                b -= dt(self.eta) * ub
                return
            np.multiply(U, dt(self.mu), out=S)
            G += S
            gb += dt(self.mu) * ub
        G *= dt(self.eta)
        W -= G
        b -= dt(self.eta) * gb


class AdamOptimizer(ParameterOptimizer):
    """``torch.optim.Adam`` / ``AdamW``; moments in trained units (see the module docstring)."""

    def __init__(self, rule: Adam, params, scales):
        super().__init__(params, scales)
        self.rule = rule
        self.moments = [tuple(np.zeros_like(p) for p in (W, W, b, b)) for W, b in params]
        self.count = 0
        self._step_size = self._denominator = 0.0

    def start_step(self, eta):
        super().start_step(eta)
        self.count += 1
        b1, b2 = self.rule.betas
        self._step_size = self.eta / (1.0 - b1**self.count)
        self._denominator = (1.0 - b2**self.count) ** 0.5

    def update(self, i, g, h):
        G, S = self._buffers(self.params[i][0].shape)
        np.dot(g.T, h, out=G)
        self._step(i, G, S, _bias_gradient(g, self.params[i][1]))

    def update_products(self, i, G_W, G_b):
        G, S = self._buffers(self.params[i][0].shape)
        G[...] = G_W
        self._step(i, G, S, np.array(G_b, dtype=self.dtype))

    def _step(self, i, G, S, gb):
        W, b = self.params[i]
        s = self.scales[i]
        dt = self.dtype.type
        G *= dt(s.grad_weight)
        self._apply(W, G, S, s.trained_weight, *self.moments[i][:2])
        gb = dt(s.grad_bias) * gb
        self._apply(b, gb, np.empty_like(b), s.trained_bias, *self.moments[i][2:])

    def _apply(self, p, d, S, t, m, v):
        """One Adam step of the stored ``p`` from the trained-unit gradient ``d`` (overwritten)."""
        r, dt = self.rule, self.dtype.type
        b1, b2 = r.betas
        if r.weight_decay:
            if r.decoupled:
                p *= dt(1.0 - self.eta * r.weight_decay)
            else:
                np.multiply(p, dt(r.weight_decay * t), out=S)  # w θ~ = w t p
                d += S
        m *= dt(b1)
        np.multiply(d, dt(1.0 - b1), out=S)
        m += S
        v *= dt(b2)
        np.multiply(d, d, out=S)
        S *= dt(1.0 - b2)
        v += S
        np.sqrt(v, out=S)
        S /= dt(self._denominator)
        S += dt(r.eps)
        np.divide(m, S, out=S)
        S *= dt(self._step_size / t)
        p -= S


def _bias_gradient(g, b):
    """``sum_i g_i`` of a layer, or nothing (shape ``(0,)``) for a layer without a bias."""
    return g.sum(axis=0) if b.size else np.zeros_like(b)


def training_rule(learning_rate, dynamics):
    """The rule of ``train_network(learning_rate=..., dynamics=...)``: exactly one of the two, as a
    GradientDescent (``learning_rate=eta`` is ``GradientDescent(eta)``) or an Adam (TypeError otherwise)."""
    if (learning_rate is None) == (dynamics is None):
        if dynamics is None:
            raise TypeError(
                "train_network needs a training rule: learning_rate=eta (plain gradient descent) or "
                "dynamics=GradientDescent(eta, momentum=..., nesterov=..., weight_decay=...) or Adam(eta)"
            )
        raise TypeError(
            f"pass learning_rate= or dynamics=, not both: dynamics={dynamics!r} carries its own rate; "
            f"put it there, e.g. GradientDescent(learning_rate={learning_rate!r}, ...)"
        )
    if dynamics is None:
        if isinstance(learning_rate, (TrainingRule, Adam)):
            raise TypeError(f"pass the rule {learning_rate!r} as dynamics=, not as learning_rate=")
        return GradientDescent(learning_rate)
    if isinstance(dynamics, GradientFlow):
        raise TypeError(
            f"dynamics={dynamics!r}: real training takes discrete steps, and gradient flow is their "
            "continuous-time limit; train with dynamics=GradientDescent(learning_rate=...) (a small "
            "rate follows the flow)"
        )
    if not isinstance(dynamics, (GradientDescent, Adam)):
        raise TypeError(
            "dynamics must be a GradientDescent(learning_rate, momentum=..., nesterov=..., "
            f"weight_decay=...) or an Adam(learning_rate, ...), got {dynamics!r}"
        )
    return dynamics


def parameter_optimizer(rule, params, scales) -> ParameterOptimizer:
    """The :class:`ParameterOptimizer` that runs ``rule`` (a GradientDescent or an Adam) on ``params``."""
    if isinstance(rule, Adam):
        return AdamOptimizer(rule, params, scales)
    if isinstance(rule, GradientDescent):
        return SGD(rule, params, scales)
    raise TypeError(f"no parameter-space optimiser for {rule!r}; use GradientDescent(...) or Adam(...)")

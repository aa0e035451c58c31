"""scikit-learn's ``MLPRegressor`` / ``MLPClassifier`` as ntksolve networks, exactly.

scikit-learn's MLPs compute ``z = h @ coefs_[l] + intercepts_[l]`` and train those arrays: the
standard parameterisation of the conventions, with ``W~ = coefs_[l].T`` (shape ``(n_out, n_in)``)
and ``b~ = intercepts_[l]``. :func:`from_sklearn` returns the ntksolve network computing the same
function, ``MLP(..., parameterization="standard", weight_std=1, bias_std=1)`` with
``W = sqrt(n_in) W~``, ``b = b~`` (:mod:`ntksolve.nets.trained_layers`); its empirical NTK is the one over
scikit-learn's own parameters.

``net.apply`` gives the output layer *before* the output activation: ``predict`` for a
squared-error regressor; the logits for a classifier (``predict_proba`` is their softmax, for
several classes, or logistic function, for binary and multilabel problems); ``log`` of the mean of
a Poisson regressor. Hidden activations: ``identity``, ``logistic`` (ntksolve's ``sigmoid``),
``tanh``, ``relu``.

Units (:func:`learning_rate_from_sklearn`): scikit-learn's squared error reports ntksolve's loss
``1/(2Nk) sum ||f - y||^2`` but steps along the gradient of ``1/(2N) sum ||f - y||^2`` (no division
by ``k``), so ``learning_rate_init = eta`` is ntksolve's ``k eta``. Its log-loss gradient over the
logits is ``(p - Y) / N``, the cross-entropy rule's: the rate is unchanged. ``alpha`` adds
``alpha W / N`` to the weights' gradients only (weight decay ``alpha / N`` on weights, not
intercepts). Its momentum (``momentum``, ``nesterovs_momentum``) is PyTorch's heavy ball and
Nesterov with the same rate. Adam has no function-space twin.

:func:`sklearn_initial_network` draws the network a not-yet-fitted estimator will start from,
exactly as ``fit`` does (Glorot-uniform ``U(-b, b)``, ``b = sqrt(6 / (fan_in + fan_out))``, ``2``
instead of ``6`` for the logistic activation, weights then intercepts layer by layer from
``check_random_state(random_state)``), so that its training can be predicted before it runs.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_array, check_random_state

from ntksolve._validation import check_learning_rate
from ntksolve.dynamics.units import LOSS_CONVENTIONS
from ntksolve.nets.trained_layers import mlp_from_layers

__all__ = ["from_sklearn", "sklearn_initial_network", "learning_rate_from_sklearn"]

#: scikit-learn's hidden activation -> ntksolve's.
ACTIVATION_NAMES = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


def _check_estimator(estimator):
    if not isinstance(estimator, (MLPRegressor, MLPClassifier)):
        raise TypeError(
            f"estimator must be a scikit-learn MLPRegressor or MLPClassifier, got {type(estimator).__name__}"
        )
    if estimator.activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation={estimator.activation!r} is not one of scikit-learn's {sorted(ACTIVATION_NAMES)}")
    return estimator


def _network(coefs, intercepts, activation: str):
    """The ntksolve network of scikit-learn-layout ``coefs`` (n_in, n_out) and ``intercepts``."""
    layers = []
    for i, (coef, intercept) in enumerate(zip(coefs, intercepts)):
        coef = np.asarray(coef)
        if coef.dtype not in (np.float64, np.float32):
            raise ValueError(f"coefs_[{i}] is {coef.dtype}; scikit-learn fits float64 or float32")
        layers.append((coef.T, np.asarray(intercept, dtype=coef.dtype), f"coefs_[{i}]"))
    return mlp_from_layers(layers, ACTIVATION_NAMES[activation])


def from_sklearn(estimator):
    """Import a fitted ``MLPRegressor`` or ``MLPClassifier`` as an ntksolve network, exactly.

    Parameters
    ----------
    estimator : sklearn.neural_network.MLPRegressor or MLPClassifier, fitted

    Returns
    -------
    net : MLP
        Standard parameterisation, ``weight_std = bias_std = 1``, the estimator's hidden widths,
        activation and ``n_outputs_``.
    params : list of (W, b)
        ``W = sqrt(n_in) coefs_[l].T``, ``b = intercepts_[l]`` (fresh arrays, the fit's dtype).

    Notes
    -----
    ``net.apply(params, X)`` is the output layer before ``estimator.out_activation_`` (see the
    module docstring): ``predict`` for a regressor, the logits for a classifier.

    Raises
    ------
    TypeError
        Not a scikit-learn MLP.
    sklearn.exceptions.NotFittedError
        (a ``ValueError``) The estimator is not fitted: :func:`sklearn_initial_network` gives the
        network ``fit`` will start from.
    """
    _check_estimator(estimator)
    if not hasattr(estimator, "coefs_"):
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet, so it has no weights to import; "
            "call fit first, or use ntksolve.sklearn.mlp_import.sklearn_initial_network(estimator, X, y) "
            "for the network fit will start from"
        )
    return _network(estimator.coefs_, estimator.intercepts_, estimator.activation)


def _n_outputs(estimator, y) -> int:
    """The number of output units ``fit`` gives the network for targets ``y``."""
    if isinstance(estimator, MLPClassifier):
        # fit binarises the labels with a LabelBinarizer: one column for two classes, one per
        # class for several, one per label for a multilabel indicator matrix
        return int(LabelBinarizer().fit(y).transform(y).shape[1])
    arr = np.asarray(y)
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return 1
    if arr.ndim != 2:
        raise ValueError(f"y must have shape (N,) or (N, k), got {arr.shape}")
    return int(arr.shape[1])


def sklearn_initial_network(estimator, X, y):
    """The network ``estimator.fit(X, y)`` will start from, drawn exactly as scikit-learn draws it.

    Parameters
    ----------
    estimator : MLPRegressor or MLPClassifier
        Its ``random_state`` must be an int or a ``numpy.random.RandomState`` (copied, not
        consumed: a later ``fit`` draws the same weights). With ``warm_start=True`` and a fitted
        estimator, ``fit`` continues from the current weights, which are returned.
    X : array_like, shape (N, d)
        Only its shape and dtype matter (float32 stays float32, as in ``fit``; anything else is
        float64).
    y : array_like, shape (N,) or (N, k)
        The targets ``fit`` will see (they fix the number of outputs; a classifier's labels ``(N,)``).

    Returns
    -------
    net, params
        As :func:`from_sklearn` returns for the estimator right after its initialisation; its
        ``coefs_`` are ``params[l][0].T / sqrt(n_in)`` to rounding (the intercepts exactly).

    Raises
    ------
    ValueError
        ``random_state=None`` (every fit draws new weights, so the network cannot be known in
        advance), invalid ``hidden_layer_sizes``.
    """
    _check_estimator(estimator)
    if getattr(estimator, "warm_start", False) and hasattr(estimator, "coefs_"):
        return from_sklearn(estimator)
    rs = estimator.random_state
    if rs is None:
        raise ValueError(
            "random_state=None: scikit-learn draws new initial weights at every fit, so the network "
            "it will train cannot be known in advance; set random_state to an int"
        )
    rng = copy.deepcopy(rs) if isinstance(rs, np.random.RandomState) else check_random_state(rs)
    X = check_array(X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32))
    sizes = estimator.hidden_layer_sizes
    sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise ValueError(f"hidden_layer_sizes must contain positive ints, got {estimator.hidden_layer_sizes!r}")
    units = [X.shape[1]] + [int(n) for n in sizes] + [_n_outputs(estimator, y)]
    # scikit-learn's MLP._init_coef, layer by layer in this order: weights, then intercepts
    factor = 2.0 if estimator.activation == "logistic" else 6.0
    coefs, intercepts = [], []
    for fan_in, fan_out in zip(units[:-1], units[1:]):
        bound = np.sqrt(factor / (fan_in + fan_out))
        coefs.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(X.dtype, copy=False))
        intercepts.append(rng.uniform(-bound, bound, fan_out).astype(X.dtype, copy=False))
    return _network(coefs, intercepts, estimator.activation)


def learning_rate_from_sklearn(estimator, *, n_outputs=None) -> float:
    """ntksolve's learning rate equivalent to the estimator's ``learning_rate_init``.

    Parameters
    ----------
    estimator : MLPRegressor or MLPClassifier with ``solver="sgd"`` and ``learning_rate="constant"``
    n_outputs : int, optional
        ``k``; default the fitted ``n_outputs_`` (required for an unfitted regressor).

    Returns
    -------
    rate : float
        ``k * learning_rate_init`` for a squared-error regressor (its gradient omits ntksolve's
        ``1/k``); ``learning_rate_init`` for a classifier (the cross-entropy rule's units).

    Raises
    ------
    ValueError
        Another solver (Adam has no function-space twin; L-BFGS no rate), a non-constant rate
        schedule, a Poisson loss, a classifier fitted on multi-label targets (independent logistic
        outputs), ``k`` unknown, or a ``learning_rate_init`` that is not a positive
        finite number (0 is refused as every rule refuses it).
    """
    _check_estimator(estimator)
    if estimator.solver != "sgd":
        raise ValueError(
            f"solver={estimator.solver!r} has no learning rate that maps onto gradient descent "
            "(Adam normalises each coordinate; L-BFGS is a line search); use solver='sgd'"
        )
    if estimator.learning_rate != "constant":
        raise ValueError(
            f"learning_rate={estimator.learning_rate!r} changes the rate during training; only "
            "learning_rate='constant' maps onto one rate"
        )
    eta = check_learning_rate(estimator.learning_rate_init, "learning_rate_init")  # unfitted: unchecked yet
    if isinstance(estimator, MLPClassifier):
        if getattr(estimator, "out_activation_", None) == "logistic" and estimator.n_outputs_ > 1:
            raise ValueError(
                f"this MLPClassifier was fitted on multi-label targets: {estimator.n_outputs_} independent "
                "logistic outputs, not the cross-entropy rule (a softmax over the outputs, or one logistic "
                "output for two classes), so no learning rate maps it; fit it on class labels"
            )
        return eta
    if getattr(estimator, "loss", "squared_error") != "squared_error":
        raise ValueError(f"loss={estimator.loss!r} has no closed-form twin; only 'squared_error' maps")
    if n_outputs is None:
        if not hasattr(estimator, "n_outputs_"):
            raise ValueError("the estimator is not fitted: pass n_outputs (the number of target columns)")
        n_outputs = estimator.n_outputs_
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, numbers.Integral) or n_outputs <= 0:
        raise ValueError(f"n_outputs must be a positive int, got {n_outputs!r}")
    return LOSS_CONVENTIONS["sklearn_mlp_regressor"](1, int(n_outputs)) * eta  # the one table of units

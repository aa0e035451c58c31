"""The estimators' parameters, declared once, with their documentation (private).

Every estimator's keyword-only ``__init__`` and the Parameters section of its docstring are made
from these tables, so the estimators cannot disagree on a name, a default or its meaning.
"""

from __future__ import annotations

import inspect
import textwrap

import numpy as np

from ntksolve._docstrings import fill_sections

#: Default ``diag_regs`` grid of the searches (fractions of the mean diagonal).
DEFAULT_DIAG_REGS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)

#: ``(name, default, numpydoc entry)`` of the parameters every estimator takes.
SHARED_PARAMETERS = (
    (
        "hidden_layer_sizes",
        (512,),
        """
hidden_layer_sizes : tuple of int, default (512,)
    Hidden widths, as ``MLPRegressor``'s. ``kernel="empirical"`` builds a network of these widths;
    ``kernel="analytic"`` (infinite width) uses only their number, the depth ``L``, and warns
    (:class:`~ntksolve.sklearn.AnalyticWidthWarning`, once per ``fit``) when a width other than
    the default 512 is given, since ``(1, 1)`` then predicts what ``(512, 512)`` does. One
    parameter for both kernels, rather than a separate ``depth``, keeps one network's description
    in one place: moving between the kernels changes ``kernel`` alone, and nothing is rewritten
    in ``__init__``.""",
    ),
    (
        "activation",
        "relu",
        """
activation : str, default "relu"
    One of ``ntksolve.ACTIVATIONS``, or one with arguments: ``"leaky_relu(slope)"``,
    ``"abrelu(a, b)"``, ``"monomial(n)"``.""",
    ),
    (
        "weight_std",
        1.0,
        """
weight_std : float, default 1.0
    ``sigma_w > 0``.""",
    ),
    (
        "bias_std",
        0.1,
        """
bias_std : float, default 0.1
    ``sigma_b >= 0``. Positive by default: without biases a ReLU network's kernel depends only
    on angles and norms through the origin, which fits data poorly.""",
    ),
    (
        "parameterization",
        "ntk",
        """
parameterization : {"ntk", "standard"}, default "ntk"
    ``"standard"`` requires ``kernel="empirical"``.""",
    ),
    (
        "kernel",
        "analytic",
        """
kernel : {"analytic", "empirical"}, default "analytic"
    ``"analytic"``: the infinitely wide network (deterministic; predictions are the trained
    ensemble's mean, ``f_0 = 0``). ``"empirical"``: one network of these widths initialised
    with ``random_state``; its NTK at initialisation and its ``f_0`` make the prediction. With
    several outputs the traced kernel (mean over outputs) is used, exact at infinite width.""",
    ),
    (
        "learning_rate",
        None,
        """
learning_rate : float or None, default None
    ``eta`` for a ``dynamics`` name (None: 1.0). With ``dynamics="continuous"`` it only sets the
    unit of time (``eta * t``). Leave it None with a rule object, which carries its own rate.""",
    ),
    (
        "dynamics",
        "continuous",
        """
dynamics : {"continuous", "discrete"} or training rule, default "continuous"
    Gradient flow, or exact discrete steps (integer times; a learning rate above the
    critical ``2Nk / lambda_max`` is then an error in ``fit``); or a rule object such as
    ``GradientDescent(0.5, momentum=0.9, nesterov=True)`` or
    ``GradientDescent(Schedule.cosine(0.5, 1000), momentum=0.9)`` (a schedule needs a finite
    ``time``). Weight decay (``GradientDescent(..., weight_decay=w)``) needs one finite
    network's ``J theta_0``: ``kernel="empirical"`` supplies its own
    (:func:`ntksolve.nets.forward_mode.own_parameter_image`); the analytic kernel has no
    parameters and refuses it. ``chunks`` takes gradient flow and plain constant-rate descent
    only. Adaptive optimisers (Adam, ...) have no kernel twin and are refused.""",
    ),
    (
        "method",
        "auto",
        """
method : {"auto", "eigh", "expm", "krylov"} or solver, default "auto"
    The solver (:func:`ntksolve.dynamics.gradient_descent_mse`): a name, or an object such as
    ``Krylov(tol=1e-10)``.""",
    ),
    (
        "normalize_y",
        True,
        """
normalize_y : bool, default True
    Train on standardised targets (per output), as ``GaussianProcessRegressor`` does, so that
    an uncentred target does not fight the zero-mean network at initialisation; outputs and
    standard deviations are returned on the original scale.""",
    ),
    (
        "random_state",
        None,
        """
random_state : int, RandomState instance or None, default None
    Seeds the empirical network's initialisation, and the batch order of
    ``NTKClassifier(batch_size=...)``; otherwise unused.""",
    ),
    (
        "dtype",
        "float64",
        """
dtype : {"float64", "float32"}, default "float64"
    Precision of the kernels and of the solver.""",
    ),
    (
        "block_size",
        None,
        """
block_size : int, optional
    Rows per block of the empirical NTK (memory control); see :func:`ntksolve.empirical_ntk`.""",
    ),
    (
        "network",
        None,
        """
network : torch.nn.Sequential, MLPRegressor, MLPClassifier or None, default None
    Your own network, to predict its training: a PyTorch ``nn.Sequential`` that
    :func:`ntksolve.torch.from_torch` imports, or a scikit-learn MLP (fitted: its weights; not
    fitted: those its ``fit`` would start from). Its own NTK at its own parameters and its own
    outputs ``f_0`` make the prediction (``kernel="empirical"`` of that network);
    ``hidden_layer_sizes``, ``activation``, ``weight_std``, ``bias_std``, ``parameterization``,
    ``kernel``, ``random_state`` and ``normalize_y`` are then not used (the network computes
    its outputs on the targets' own scale). ``clone`` deep-copies a PyTorch module and gives an unfitted copy of a
    scikit-learn MLP (scikit-learn's rule for estimator parameters). Not saved by ``save``.""",
    ),
)

#: Parameters of one trained model (:class:`NTKRegressor`, :class:`NTKClassifier`), before the shared ones.
MODEL_PARAMETERS = (
    (
        "time",
        np.inf,
        """
time : float, default np.inf
    Steps of gradient descent at which ``predict`` answers; ``np.inf`` is convergence (kernel
    regression). ``fit`` solves at it, as scikit-learn's kernel models do their work in ``fit``:
    ``predict`` then forms the test kernel and applies the stored solution. It may be changed
    after ``fit`` without refitting (not with ``chunks``): the stored decomposition then answers
    the new time (with ``method="auto"`` on a large kernel, which chose Krylov, by a new solve). The
    loss is a mean over all ``N k`` target entries, so with ``k`` outputs every mode moves
    ``k`` times slower per step than with one. ``NTKClassifier(loss="log_loss")`` needs a
    finite time: cross-entropy has no converged limit (its logits grow without bound).""",
    ),
    (
        "diag_reg",
        0.1,
        """
diag_reg : float, default 0.1
    Ridge ``diag_reg * mean(diag Theta)`` added to the train kernel that training evolves (for
    either loss; the test kernel is not shifted); 0 is the unregularised network (which
    interpolates at ``t = inf``). Tune it (or ``time``) with
    :class:`NTKRegressorCV`.""",
    ),
    (
        "chunks",
        None,
        """
chunks : int or tuple, optional
    Beyond one machine's memory (``pip install 'ntksolve[dask]'``): the train kernel is never
    formed; its tiles (this edge, or per-axis sizes) are computed on Dask and the model is
    solved at ``time`` by Nystrom-preconditioned conjugate gradients (``t = inf``) or Lanczos
    (finite ``t``), test predictions streamed tile by tile. The model then answers ``predict``,
    ``score`` (and ``decision_function``) at the fitted ``time`` only; trajectories, staged
    predictions, ``loss_curve`` and ``return_std``/``return_cov`` need ``chunks=None`` and
    raise a ``ValueError`` saying so. See :func:`ntksolve.dask.fit_tiled`.""",
    ),
    (
        "scheduler",
        None,
        """
scheduler : str, dask.distributed.Client or None, default None
    With ``chunks``: ``None`` (the current Dask client, else threads), ``"threads"``,
    ``"processes"``, ``"sync"``, a client, or a scheduler address such as ``"tcp://host:8786"``:
    moving from a laptop to a cluster changes this one argument. A saved model never holds
    it: pass it to :func:`ntksolve.load`.""",
    ),
)

#: Parameters of :class:`NTKClassifier` alone, before the model's and the shared ones.
CLASSIFIER_PARAMETERS = (
    (
        "loss",
        "squared_error",
        """
loss : {"squared_error", "log_loss", "cross_entropy"}, default "squared_error"
    The loss the network is trained on (scikit-learn's names, as in ``SGDClassifier``).
    ``"squared_error"``: the MSE of the conventions on the ``+-1`` codes, in closed form (any
    ``time``, ``np.inf`` included). ``"log_loss"`` (scikit-learn's name) or ``"cross_entropy"``
    (the name ``train_network`` and ``compare`` use; the same loss): softmax cross-entropy on the logits, as
    ``torch.nn.CrossEntropyLoss`` (``BCEWithLogitsLoss`` on one logit for two classes), run
    step by step in function space from the logits at initialisation; it needs a finite
    ``time`` and gives :meth:`predict_proba`. ``normalize_y`` is unused with it.""",
    ),
    (
        "batch_size",
        None,
        """
batch_size : int or None, default None
    ``loss="log_loss"`` with discrete steps only: minibatches of this size, in the epochs of a
    shuffling ``DataLoader`` (a fresh permutation of the training set per epoch, the last batch
    shorter) seeded by ``random_state``; None, or a size of at least ``N``, is full batch.""",
    ),
)

#: The parameters of the search, before the shared ones.
CV_PARAMETERS = (
    (
        "times",
        None,
        """
times : array_like of shape (T,) or None, default None
    Candidate times (steps; ``np.inf`` allowed). None: 49 log-spaced times spanning the
    kernel's spectrum (in units of ``k / (learning_rate * mean(diag Theta))`` steps, from
    ``1e-1`` to ``1e7``; rounded up to whole steps for discrete dynamics) plus ``np.inf``. With a
    schedule rule: whole steps, geometric from 1 to the schedule's total steps (no ``np.inf``).
    ``NTKClassifierCV(loss="log_loss")``, which has no converged limit and pays for every step:
    25 times from ``1e-1`` to ``1e3`` in the same units, no ``np.inf``.""",
    ),
    (
        "diag_regs",
        DEFAULT_DIAG_REGS,
        """
diag_regs : array_like of shape (R,), default (0, 1e-3, 1e-2, 1e-1, 1)
    Candidate ridges (each costs one decomposition per fold).""",
    ),
    (
        "cv",
        5,
        """
cv : int, cross-validation generator, iterable or "loo", default 5
    As in scikit-learn (:func:`~sklearn.model_selection.check_cv`; for an int, ``KFold`` for a
    regressor and ``StratifiedKFold`` for a classifier), or ``"loo"``: exact leave-one-out of
    converged training on the squared loss (``t = inf``) from one decomposition of all the data
    (not with ``chunks`` or ``loss="log_loss"``).""",
    ),
)


#: The tiled search's parameters (:class:`NTKRegressorCV`, :class:`NTKClassifierCV`), before the shared ones.
SEARCH_TILED_PARAMETERS = (
    (
        "chunks",
        None,
        """
chunks : int or tuple, optional
    Beyond one machine's memory (``pip install 'ntksolve[dask]'``): no kernel is formed. Each
    fold's train kernel is computed as tiles (this edge, or per-axis sizes) on Dask; each ridge is
    one Lanczos solve on them serving every time of the grid, and one streamed pass over the
    held-out tiles scores them all; the winner is refitted as the estimator with ``chunks``
    (``predict``, ``score`` at ``time_`` only). Refused up front, each naming the alternative:
    ``cv="loo"``, ``method`` other than ``"auto"``/``"krylov"``, rules with momentum, schedules
    or weight decay, ``uncertainty="predictive"``, ``loss="log_loss"``.""",
    ),
    next(entry for entry in MODEL_PARAMETERS if entry[0] == "scheduler"),
)

#: Parameters of :class:`NTKClassifierCV` alone.
CLASSIFIER_CV_PARAMETERS = (
    (
        "scoring",
        "accuracy",
        """
scoring : {"accuracy", "log_loss"}, default "accuracy"
    The held-out score that chooses ``(diag_reg, time)``: the fraction classified correctly, or
    (``loss="log_loss"`` only: it needs probabilities) the mean cross-entropy of
    :func:`sklearn.metrics.log_loss`, negated so that higher is better (scikit-learn's
    ``"neg_log_loss"``). Ties go to the first ridge of ``diag_regs``, then the earliest time.""",
    ),
)

#: Parameters of the regressors (:class:`NTKRegressor`, :class:`NTKRegressorCV`), before the shared ones.
REGRESSOR_PARAMETERS = (
    (
        "uncertainty",
        "ensemble",
        """
uncertainty : {"ensemble", "predictive"}, default "ensemble"
    What ``predict(X, return_std=True)`` (and ``return_cov``) describes. ``"ensemble"``: the
    spread of the trained infinite ensemble (infinitely wide networks from random
    initialisations, each trained for ``time`` steps; ``kernel="analytic"`` and
    ``dynamics="continuous"`` only). It has no observation noise: it is not an interval for new
    targets, and on held-out data it covers far fewer of them than its nominal level.
    ``"predictive"``: ``fit`` also fits the Gaussian process ``y ~ N(f_0, a Theta + sigma^2 I)`` on
    the train NTK by maximum marginal likelihood (``amplitude_``, ``noise_variance_``), and
    ``return_std`` is the root mean squared error of ``predict``'s output for a new observation
    under it, noise included, as ``GaussianProcessRegressor``'s with a ``WhiteKernel``: intervals
    for new targets, for any kernel and dynamics (not with ``chunks``).""",
    ),
)


#: The sections of a ``fit`` docstring, for the ``y`` it takes.
_FIT_SECTION = """
Parameters
----------
X : array_like, shape (N, d)
{y}

Returns
-------
self
"""

#: Docstring sections that several estimator methods share: a line ``{name}`` of a docstring is
#: replaced by the section (:func:`document`, or :func:`ntksolve._docstrings.fill_sections` on a base class).
METHOD_SECTIONS = {
    "X": """
        Parameters
        ----------
        X : array_like, shape (M, d)
        """,
    "X_times": """
        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)
        """,
    "staged": """
        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Yields
        ------
        """,
    "fit_labels": _FIT_SECTION.format(y="y : array_like, shape (N,)\n    Class labels (any type)."),
    "fit_targets": _FIT_SECTION.format(y="y : array_like, shape (N,) or (N, k)"),
    "search_attributes": """
        time_ : float
            The chosen time (used by :meth:`predict`).
        diag_reg_ : float
            The chosen ridge.
        times_ : ndarray, shape (T,)
            The grid of times searched.
        diag_regs_ : ndarray, shape (R,)
        """,
}


def keyword_init(*tables):
    """``__init__(self, *, name=default, ...)`` over the parameter tables, storing each value as given.

    Written out once here rather than in every class, scikit-learn still sees explicit
    keyword-only parameters: it reads them from the signature (``__signature__``), and so do
    ``help`` and ``inspect``. A positional argument or an unknown name is a ``TypeError``.
    """
    defaults = {name: default for table in tables for name, default, _ in table}
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d) for name, d in defaults.items()]
    )

    def __init__(self, *args, **params):
        if args:
            raise TypeError(
                f"{type(self).__name__}() takes keyword arguments only, got {len(args)} positional: "
                f"name them, e.g. {type(self).__name__}({next(iter(defaults))}=...)"
            )
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        for name, default in defaults.items():
            setattr(self, name, params.get(name, default))

    __init__.__signature__ = signature
    __init__.__doc__ = "Store the parameters unchanged (scikit-learn's rule); ``fit`` validates them."
    return __init__


#: What the line ``{parameters}`` of an estimator's docstring opens with (:func:`document`).
_PARAMETERS_HEADER = "    All parameters are keyword-only.\n\n    Parameters\n    ----------\n"


def document(*tables):
    """Class decorator: replace the line ``{parameters}`` of the docstring by the Parameters section
    (the tables' entries, keyword-only), and the other ``{name}`` lines of the class's and its
    methods' docstrings by the sections of :data:`METHOD_SECTIONS`."""
    entries = "".join(textwrap.indent(doc, "    ") for table in tables for _, _, doc in table).lstrip("\n")

    def decorate(cls):
        marker = "    {parameters}\n"
        if marker not in (cls.__doc__ or ""):
            raise AssertionError(f"{cls.__name__}'s docstring lacks the {marker.strip()} line")
        cls.__doc__ = cls.__doc__.replace(marker, _PARAMETERS_HEADER + entries + "\n")
        return fill_sections(METHOD_SECTIONS)(cls)

    return decorate

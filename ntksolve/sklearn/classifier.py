""":class:`NTKClassifier`: a wide network trained by gradient descent on MSE to ``+-1`` codes, or on
softmax cross-entropy, predicted from its NTK."""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import expit, log_expit, log_softmax, softmax
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ntksolve.sklearn import _solve
from ntksolve.sklearn._params import CLASSIFIER_PARAMETERS, MODEL_PARAMETERS, SHARED_PARAMETERS, document, keyword_init
from ntksolve.sklearn.base import _check_choice, _NTKBase, register

__all__ = ["NTKClassifier"]

#: Values of ``loss``, scikit-learn's names (``SGDClassifier``): MSE on the codes, softmax cross-entropy.
LOSSES = ("squared_error", "log_loss", "cross_entropy")
#: Softmax cross-entropy: scikit-learn's name, and the one the rest of ntksolve uses (train_network, compare).
CROSS_ENTROPY = ("log_loss", "cross_entropy")


def _has_probabilities(est):
    """``predict_proba`` and its kin exist for ``loss="log_loss"`` only (an AttributeError otherwise)."""
    if est.loss not in CROSS_ENTROPY:
        raise AttributeError(
            f"predict_proba needs loss='log_loss': the outputs of a network trained on squared error "
            f"(loss={est.loss!r}) are not probabilities; use decision_function, or CalibratedClassifierCV on it"
        )
    return True


def _batch_seed(random_state):
    """One seed for the batch order, drawn once per fit (so every prediction sees the same batches)."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    # an int or None, on a stream of its own (not the network initialisation's)
    return int(np.random.default_rng(None if random_state is None else [random_state, 1]).integers(2**31 - 1))


@register
@document(CLASSIFIER_PARAMETERS, MODEL_PARAMETERS, SHARED_PARAMETERS)
class NTKClassifier(ClassifierMixin, _NTKBase):
    """A wide network trained by gradient descent as a classifier, predicted from its NTK.

    ``loss="squared_error"`` (the default): the labels are coded as in
    :class:`~sklearn.linear_model.RidgeClassifier`, ``+1`` for the sample's class and ``-1`` for
    the others (one column for two classes: ``+1`` for ``classes_[1]``), and the network is trained
    on them with the same mean squared error as :class:`NTKRegressor` (same parameters, closed
    form; ``normalize_y`` standardises each column). There is no ``predict_proba`` then: the outputs
    of a network trained on MSE are not probabilities (they are not confined to [0, 1], nor
    calibrated). Use :class:`~sklearn.calibration.CalibratedClassifierCV` on
    :meth:`decision_function` if probabilities are needed.

    ``loss="log_loss"``: the linearised network trained on softmax cross-entropy, as
    ``torch.nn.CrossEntropyLoss`` with one logit per class; two classes are one logit trained with
    ``BCEWithLogitsLoss`` (``classes_[1]`` when positive, as ``LogisticRegression``). Its logits
    move by ``f <- f - (eta_s / |b|) Theta (softmax(f) - Y)`` on the batch ``b`` (with momentum,
    schedules and weight decay as the rule says, ``docs/training-rules.md``), from the logits at
    initialisation: 0 for the analytic kernel (the ensemble's mean output at initialisation, the
    start the squared-loss estimators take too; for cross-entropy, whose dynamics are nonlinear in
    ``f_0``, this is the network started at that mean, not the mean of the trained ensemble), the
    network's own ``f_0`` for the empirical kernel. The kernel acts as ``Theta ⊗ I_k``: the
    analytic NTK, or the empirical network's traced NTK (exact for two classes, one logit; with
    more classes the mean over outputs, exact at infinite width). ``time`` must be finite; the
    learning rate is in ``torch.nn.CrossEntropyLoss``'s units. ``dynamics="continuous"`` is
    gradient flow, integrated by ``scipy.integrate.solve_ivp``. ``fit`` computes the train
    kernel and runs the recurrence to ``time`` (``O(S N^2 k)`` for ``S`` steps), keeping the
    coefficients that make each prediction at ``time`` one test–train product; a trajectory runs
    it once more, to the last time it asks for.

    {parameters}

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
        Labels of any type, sorted.
    X_train_, y_train_, network_, params_, fx_train_0_, predictor_, tiled_, diag_reg_, n_features_in_
        As :class:`NTKRegressor` (``y_train_`` holds the standardised ``+-1`` codes; with
        ``loss="log_loss"`` the one-hot targets, one 0/1 column for two classes, and
        ``predictor_`` the cross-entropy trajectory).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=5.0, time=300)
    >>> clf.fit(X[:300] / 16, y[:300]).predict_proba_trajectory(X[300:400] / 16, [0, 100, 300]).shape
    (3, 100, 10)
    """

    __init__ = keyword_init(CLASSIFIER_PARAMETERS, MODEL_PARAMETERS, SHARED_PARAMETERS)

    #: Parameters newer than the classifier's first files, which meant these defaults (persistence).
    _parameters_added_later = {name: default for name, default, _ in CLASSIFIER_PARAMETERS}

    # -- parameters ---------------------------------------------------------------------------
    def _check_params(self):
        self._check_loss()
        super()._check_params()

    def _check_loss(self):
        """The parameters of the loss (``loss``, ``batch_size``) and what they exclude."""
        if self.loss in ("log", "logistic", "softmax"):
            raise ValueError(
                f"loss must be one of {', '.join(map(repr, LOSSES))}; got {self.loss!r} "
                "(softmax cross-entropy is 'log_loss', scikit-learn's name, or 'cross_entropy')"
            )
        _check_choice(self.loss, "loss", LOSSES)
        bs = self.batch_size
        if bs is not None:
            if isinstance(bs, (bool, np.bool_)) or not isinstance(bs, numbers.Integral) or bs < 1:
                raise ValueError(f"batch_size must be None or a positive int, got {bs!r}")
            if self.loss not in CROSS_ENTROPY:
                raise ValueError(
                    "batch_size needs loss='log_loss' (the squared loss is solved in closed form, "
                    "full batch); use batch_size=None, or ntksolve.sgd_mse for minibatch MSE"
                )
        if self.loss in CROSS_ENTROPY:
            if self.chunks is not None:
                raise ValueError(
                    f"chunks={self.chunks!r} solves the squared loss in closed form from kernel tiles; "
                    "loss='log_loss' runs step by step on the train kernel in memory: use chunks=None"
                )
            if bs is not None and self._rule().name == "continuous":
                raise ValueError(
                    "batch_size needs discrete steps (dynamics='discrete' or a GradientDescent rule); "
                    "gradient flow is full batch"
                )

    def _time(self, value, name):
        t = super()._time(value, name)
        if t == np.inf and self.loss in CROSS_ENTROPY:
            raise ValueError(
                f"{name} = inf has no meaning for loss='log_loss': cross-entropy has no converged limit (on "
                "separable data, which a positive-definite kernel makes of every training set, the logits "
                f"grow without bound); set it to a number of steps, e.g. time=1000; got {value!r}"
            )
        return t

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X, y):
        """Compute the train kernel and solve at ``time``: the decomposition (squared loss) or the run
        of the recurrence (cross-entropy), so that errors of the solve surface here.

        {fit_labels}
        """
        self._check_params()
        X, _, _ = self._fit_labels(X, y)
        self._fit_solver(X, self.diag_reg)
        return self

    def _fit_labels(self, X, y):
        """Validate ``(X, y)``, code the labels and store the training state: ``(X, y, Y)``, ``Y`` the
        ``(N, k)`` codes (``+-1``, or 0/1 for cross-entropy)."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"{type(self).__name__} supports binary and multiclass targets, got {kind!r}")
        ce = self.loss in CROSS_ENTROPY
        binarizer = LabelBinarizer(neg_label=0 if ce else -1, pos_label=1)
        Y = binarizer.fit_transform(y)
        self.classes_ = binarizer.classes_
        if self.classes_.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but it contains only "
                f"one class: {self.classes_[0]!r}"
            )
        # the network's initialisation first, then the batch seed: a RandomState or Generator is drawn
        # from in that order, so batch_size leaves the network that random_state gives unchanged
        self._set_training_state(X, Y.astype(np.float64), normalize=False if ce else None)
        self._batch_seed = _batch_seed(self.random_state) if ce and self.batch_size is not None else None
        return X, y, Y.astype(np.float64)

    def _build_predictor(self, K, diag_reg):
        if self.loss not in CROSS_ENTROPY:
            super()._build_predictor(K, diag_reg)
            return
        if not (np.all(self._y_train_mean == 0) and np.all(self._y_train_std == 1)):
            raise ValueError(
                "with loss='log_loss' the targets are not standardised: y_train_mean and y_train_std must be 0 and 1"
            )
        self.predictor_ = _solve.CrossEntropyPredictor(
            K,
            self.y_train_,
            diag_reg=diag_reg,
            rule=self._rule(),
            batch_size=self.batch_size,
            batch_seed=self._batch_seed,
        )
        self.tiled_ = None
        self.diag_reg_ = float(diag_reg)
        self._ensemble_cache = None

    def _train_loss(self, ts):
        if self.loss not in CROSS_ENTROPY:
            return super()._train_loss(ts)
        return self.predictor_.loss(ts, self.fx_train_0_, **self._decay_arguments())

    def _staged_outputs(self, X, times):
        if self.loss not in CROSS_ENTROPY:
            yield from super()._staged_outputs(X, times)
            return
        check_is_fitted(self)
        X = self._validated_X(X)
        out = self._outputs(X, self._check_times(times))  # one run of the recurrence for every time
        for i in range(out.shape[0]):
            yield out[i : i + 1]

    # -- outputs ------------------------------------------------------------------------------
    def _decision(self, F):
        """(..., M, k) outputs -> decision values (the ``+-1`` scale, or logits), binary squeezed."""
        D = self._unscale(F)
        return D[..., 0] if D.shape[-1] == 1 else D

    @staticmethod
    def _probabilities(F, log=False):
        """(..., M, k) logits -> (..., M, n_classes) (log-)probabilities; one logit is [σ(-f), σ(f)]."""
        if F.shape[-1] == 1:
            f = np.concatenate([-F, F], axis=-1)
            return log_expit(f) if log else expit(f)
        return log_softmax(F, axis=-1) if log else softmax(F, axis=-1)

    def _labels(self, D):
        """Decision values (M,) or (M, n_classes) -> labels (M,)."""
        return self.classes_[(D > 0).astype(int)] if D.ndim == 1 else self.classes_[np.argmax(D, axis=1)]

    def _at_time(self, X):
        X = self._validated_X(X)
        return self._outputs(X, [self._time_at_predict()])[0]

    def decision_function(self, X):
        """Network outputs after ``self.time`` steps: the ``+-1`` code scale, or the logits (``log_loss``).

        {X}

        Returns
        -------
        scores : ndarray, shape (M,) for two classes (positive means ``classes_[1]``), else (M, n_classes)
        """
        return self._decision(self._at_time(X))

    def predict(self, X):
        """Class of the largest output (two classes: the sign of the single output).

        {X}

        Returns
        -------
        y_pred : ndarray, shape (M,)
        """
        return self._labels(self.decision_function(X))

    @available_if(_has_probabilities)
    def predict_proba(self, X):
        """Class probabilities after ``self.time`` steps (``loss="log_loss"`` only): the softmax of the logits.

        {X}

        Returns
        -------
        proba : ndarray, shape (M, n_classes)
            Columns in the order of ``classes_``; rows sum to 1.
        """
        return self._probabilities(self._at_time(X))

    @available_if(_has_probabilities)
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed as a log-softmax (no underflow).

        {X}

        Returns
        -------
        log_proba : ndarray, shape (M, n_classes)
        """
        return self._probabilities(self._at_time(X), log=True)

    def decision_trajectory(self, X, times):
        """Decision values at every time of a training run, from one kernel evaluation (and, for
        ``log_loss``, one run of the recurrence).

        {X_times}

        Returns
        -------
        scores : ndarray, shape (T, M) for two classes, else (T, M, n_classes)
        """
        check_is_fitted(self)
        self._require_in_memory("decision_trajectory")
        X = self._validated_X(X)
        return self._decision(self._outputs(X, self._check_times(times)))

    @available_if(_has_probabilities)
    def predict_proba_trajectory(self, X, times):
        """Class probabilities at every time of a training run (``loss="log_loss"`` only).

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)
            Steps (finite; whole numbers for discrete rules), in any order.

        Returns
        -------
        proba : ndarray, shape (T, M, n_classes)
        """
        check_is_fitted(self)
        X = self._validated_X(X)
        return self._probabilities(self._outputs(X, self._check_times(times)))

    def staged_decision_function(self, X, times):
        """Yield :meth:`decision_function` at each of ``times`` (test kernel computed once).

        {staged}
        scores : ndarray, shape (M,) or (M, n_classes)
        """
        for out in self._staged_outputs(X, times):
            yield self._decision(out[0])

    @available_if(_has_probabilities)
    def staged_predict_proba(self, X, times):
        """Yield :meth:`predict_proba` at each of ``times`` (one kernel, one run of the recurrence).

        {staged}
        proba : ndarray, shape (M, n_classes)
        """
        for out in self._staged_outputs(X, times):
            yield self._probabilities(out[0])

    def staged_predict(self, X, times):
        """Yield :meth:`predict` at each of ``times`` (test kernel computed once).

        {staged}
        y_pred : ndarray, shape (M,)
        """
        for D in self.staged_decision_function(X, times):
            yield self._labels(D)

    # -- state ---------------------------------------------------------------------------------
    def _state_extras(self, attrs, arrays):
        arrays["classes"] = self.classes_
        attrs["classes_object"] = bool(np.asarray(self.classes_).dtype == object)
        if self.loss in CROSS_ENTROPY and self.batch_size is not None:
            attrs["batch_seed"] = int(self._batch_seed)

    def _restore_extras(self, state):
        as_object = state.attr("classes_object", "bool")
        # files of the first writer carry y_ndim for every estimator; a classifier's is always 1
        if state.attr("y_ndim", "int", default=1) != 1:
            raise ValueError("a classifier's y_ndim must be 1")
        classes = state.array("classes", "biufU", (None,))
        if classes.size < 2 or not np.array_equal(np.unique(classes), classes):
            raise ValueError(f"classes must hold at least 2 distinct labels, sorted; got {classes[:8].tolist()}")
        if as_object and classes.dtype.kind != "U":
            raise ValueError("classes_object is for string labels only")
        self.classes_ = classes.astype(object) if as_object else classes
        minibatch = self.loss in CROSS_ENTROPY and self.batch_size is not None
        self._batch_seed = state.attr("batch_seed", "int", lower=0) if minibatch else None
        return 1 if classes.size == 2 else classes.size

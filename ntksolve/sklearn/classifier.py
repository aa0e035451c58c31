""":class:`NTKClassifier`: a wide network trained by gradient descent on MSE to ``+-1`` codes."""
from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ntksolve.sklearn._params import MODEL_PARAMETERS, SHARED_PARAMETERS, document
from ntksolve.sklearn.base import _NTKBase, register

__all__ = ["NTKClassifier"]


@register
@document(MODEL_PARAMETERS, SHARED_PARAMETERS)
class NTKClassifier(ClassifierMixin, _NTKBase):
    """A wide network trained by gradient descent on MSE to one-hot targets, as a classifier.

    The labels are coded as in :class:`~sklearn.linear_model.RidgeClassifier`: ``+1`` for the
    sample's class and ``-1`` for the others (one column for two classes: ``+1`` for
    ``classes_[1]``), and the network is trained on them with the same mean squared error as
    :class:`NTKRegressor` (same parameters; ``normalize_y`` standardises each column).
    ``predict`` takes the largest output (two classes: its sign).

    There is no ``predict_proba``: the outputs of a network trained on MSE are not probabilities
    (they are not confined to [0, 1], nor calibrated), and inventing a squashing would misreport
    them. Use :class:`~sklearn.calibration.CalibratedClassifierCV` on :meth:`decision_function` if
    probabilities are needed.

    All parameters are keyword-only.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
        Labels of any type, sorted.
    X_train_, y_train_, network_, params_, fx_train_0_, predictor_, tiled_, diag_reg_, n_features_in_
        As :class:`NTKRegressor` (``y_train_`` holds the standardised ``+-1`` codes).
    """

    def fit(self, X, y):
        """Compute the train kernel and its decomposition for the one-hot (``+-1``) targets.

        Parameters
        ----------
        X : array_like, shape (N, d)
        y : array_like, shape (N,)
            Class labels (any type).

        Returns
        -------
        self
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"NTKClassifier supports binary and multiclass targets, got {kind!r}")
        binarizer = LabelBinarizer(neg_label=-1, pos_label=1)
        Y = binarizer.fit_transform(y)
        self.classes_ = binarizer.classes_
        if self.classes_.size < 2:
            raise ValueError(
                f"NTKClassifier needs samples of at least 2 classes in the data, but it contains only "
                f"one class: {self.classes_[0]!r}")
        self._set_training_state(X, Y.astype(np.float64))
        self._fit_solver(X)
        return self

    def _decision(self, F):
        """(..., M, k) standardised outputs -> decision values on the +-1 scale, binary squeezed."""
        D = self._unscale(F)
        return D[..., 0] if D.shape[-1] == 1 else D

    def _labels(self, D):
        """Decision values (M,) or (M, n_classes) -> labels (M,)."""
        return self.classes_[(D > 0).astype(int)] if D.ndim == 1 else self.classes_[np.argmax(D, axis=1)]

    def decision_function(self, X):
        """Network outputs after ``self.time`` steps, on the ``+-1`` code scale.

        Parameters
        ----------
        X : array_like, shape (M, d)

        Returns
        -------
        scores : ndarray, shape (M,) for two classes (positive means ``classes_[1]``), else (M, n_classes)
        """
        X = self._validated_X(X)
        return self._decision(self._outputs(X, [self._time_at_predict()])[0])

    def predict(self, X):
        """Class of the largest output (two classes: the sign of the single output).

        Parameters
        ----------
        X : array_like, shape (M, d)

        Returns
        -------
        y_pred : ndarray, shape (M,)
        """
        return self._labels(self.decision_function(X))

    def decision_trajectory(self, X, times):
        """Decision values at every time of a training run, from one kernel evaluation.

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Returns
        -------
        scores : ndarray, shape (T, M) for two classes, else (T, M, n_classes)
        """
        check_is_fitted(self)
        self._require_in_memory("decision_trajectory")
        X = self._validated_X(X)
        return self._decision(self._outputs(X, self._check_times(times)))

    def staged_decision_function(self, X, times):
        """Yield :meth:`decision_function` at each of ``times`` (test kernel computed once).

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Yields
        ------
        scores : ndarray, shape (M,) or (M, n_classes)
        """
        for out in self._staged_outputs(X, times):
            yield self._decision(out[0])

    def staged_predict(self, X, times):
        """Yield :meth:`predict` at each of ``times`` (test kernel computed once).

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Yields
        ------
        y_pred : ndarray, shape (M,)
        """
        for D in self.staged_decision_function(X, times):
            yield self._labels(D)

    # -- state ---------------------------------------------------------------------------------
    def _state_extras(self, attrs, arrays):
        arrays["classes"] = self.classes_
        attrs["classes_object"] = bool(np.asarray(self.classes_).dtype == object)

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
        return 1 if classes.size == 2 else classes.size

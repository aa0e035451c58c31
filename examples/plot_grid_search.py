"""
An NTK model in a grid search
=============================

:class:`ntksolve.NTKRegressor` and :class:`ntksolve.NTKClassifier` are scikit-learn estimators:
they clone, pickle, sit in a :class:`~sklearn.pipeline.Pipeline` and are tuned by
:class:`~sklearn.model_selection.GridSearchCV` like any other. Here the trained network's
prediction (``time``, the number of gradient-descent steps, and the ridge ``diag_reg``, relative
to the kernel's mean diagonal) is tuned beside an RBF :class:`~sklearn.kernel_ridge.KernelRidge`
on a regression task, and beside an RBF :class:`~sklearn.svm.SVC` on a small digits task.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes, load_digits
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import ntksolve

# %%
# Regression: diabetes
# --------------------
X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
regressors = {
    "NTKRegressor": GridSearchCV(
        make_pipeline(StandardScaler(), ntksolve.NTKRegressor(hidden_layer_sizes=(512, 512))),
        {"ntkregressor__diag_reg": [1e-2, 1e-1, 1.0], "ntkregressor__time": [10.0, 100.0, np.inf]},
        cv=3,
    ),
    "KernelRidge (RBF)": GridSearchCV(
        make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")),
        {"kernelridge__alpha": [1e-2, 1e-1, 1.0], "kernelridge__gamma": [0.01, 0.03, 0.1]},
        cv=3,
    ),
}
r2 = {name: search.fit(X_train, y_train).score(X_test, y_test) for name, search in regressors.items()}
for name, search in regressors.items():
    print(f"{name}: held-out R² {r2[name]:.3f}, chosen {search.best_params_}")

# %%
# Classification: digits
# ----------------------
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X[:600], y[:600], test_size=0.25, random_state=0)
classifiers = {
    "NTKClassifier": GridSearchCV(
        make_pipeline(StandardScaler(), ntksolve.NTKClassifier()), {"ntkclassifier__diag_reg": [1e-3, 1e-2, 1e-1]}, cv=3
    ),
    "SVC (RBF)": GridSearchCV(make_pipeline(StandardScaler(), SVC()), {"svc__C": [1.0, 10.0, 100.0]}, cv=3),
}
accuracy = {name: search.fit(X_train, y_train).score(X_test, y_test) for name, search in classifiers.items()}
for name, search in classifiers.items():
    print(f"{name}: held-out accuracy {accuracy[name]:.3f}, chosen {search.best_params_}")

fig, axes = plt.subplots(1, 2, figsize=(7, 3))
axes[0].bar(list(r2), list(r2.values()), color=["C0", "C7"])
axes[0].set(ylabel="held-out R²", title="diabetes")
axes[1].bar(list(accuracy), list(accuracy.values()), color=["C0", "C7"])
axes[1].set(ylabel="held-out accuracy", title="digits (600)", ylim=(0.8, 1.0))
fig.tight_layout()

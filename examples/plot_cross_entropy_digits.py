"""
Cross-entropy on digits
=======================

``NTKClassifier(loss="cross_entropy")`` predicts a wide network trained by gradient descent on
softmax cross-entropy (``torch.nn.CrossEntropyLoss``'s loss and learning-rate units). Unlike the
squared loss there is no closed form: the logits follow the function-space recurrence
``f ← f − (η/N) Θ (softmax(f) − Y)``, one ``N × N`` kernel product per step, so a prediction at
``time`` steps costs ``time`` products and never touches the network's parameters. The learning
curve below comes from one fitted model, by
:meth:`~ntksolve.NTKClassifier.predict_proba_trajectory` (one recurrence up to the last step).
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

import ntksolve

X, y = load_digits(return_X_y=True)
X = X / 16.0  # pixel intensities in [0, 1]
X_train, X_test, y_train, y_test = train_test_split(X[:800], y[:800], test_size=0.25, random_state=0)

model = ntksolve.NTKClassifier(
    loss="cross_entropy", learning_rate=50.0, time=200, dynamics="discrete", hidden_layer_sizes=(512, 512), diag_reg=0.0
).fit(X_train, y_train)
steps = [0, 1, 2, 5, 10, 20, 50, 100, 200]
proba = model.predict_proba_trajectory(X_test, steps)  # (9, 200, 10): one recurrence to step 200
test_loss = [log_loss(y_test, p, labels=model.classes_) for p in proba]
test_accuracy = [accuracy_score(y_test, model.classes_[p.argmax(axis=1)]) for p in proba]
print(f"after {steps[-1]} steps: test cross-entropy {test_loss[-1]:.3f}, accuracy {test_accuracy[-1]:.1%}")

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.semilogx(np.maximum(steps, 0.5), test_loss, "o-", label="test cross-entropy")
ax.semilogx(np.maximum(steps, 0.5), test_accuracy, "s-", label="test accuracy")
ax.set(xlabel="gradient-descent step", title="predicted training on digits (600 train)")
ax.legend()
fig.tight_layout()

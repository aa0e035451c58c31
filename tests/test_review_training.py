"""Real training and the Jacobian for the activations the per-activation tests leave out: the
default leaky relu (slope 0.01), gelu, and the monomials of degree 1, 4 and 8 (the spellings'
range ends), by the same independent references (central differences of the loss and of the
network written out with numpy's activations, tests/reference.py)."""

from __future__ import annotations

import pytest

from test_empirical import test_jacobian_equals_finite_differences as _jacobian_check
from test_training import test_new_activations_first_step_is_the_gradient_and_the_loss_falls as _step_check

LEFT_OUT = ["leaky_relu", "gelu", "monomial(1)", "monomial(4)", "monomial(8)"]


@pytest.mark.parametrize("activation", LEFT_OUT)
def test_first_step_is_the_gradient_and_the_loss_falls(activation):
    _step_check(activation)


@pytest.mark.parametrize("activation", LEFT_OUT + ["tanh", "sigmoid", "identity", "monomial(2)"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_jacobian_equals_finite_differences(activation, parameterization):
    _jacobian_check(activation, parameterization)

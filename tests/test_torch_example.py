"""The example of docs/torch.md, run as written: the closed-form prediction tracks real PyTorch
training of the same module (two independent computations)."""

import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'ntksolve[torch]'")

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "torch.md")

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def test_docs_example_runs_and_predicts_training(capsys):
    text = open(DOC, encoding="utf-8").read()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)  # the first example
    ns = {"__name__": "docs_example"}
    exec(compile(code, DOC, "exec"), ns)
    moved, gap, result = ns["moved"], ns["gap"], ns["result"]
    assert result.fx_test.shape == (4, 32, 1) and not result.diverged
    assert gap[0] < 1e-12  # the same function at step 0
    assert moved[-1] > 0.5  # it trained
    np.testing.assert_array_less(gap[1:], 0.02 * moved[1:])  # prediction within 2% of the move
    printed = capsys.readouterr().out
    assert "of the critical rate" in printed and "step 100" in printed


def test_readme_carries_the_same_example():
    """The README's PyTorch section is the example above, verbatim (so it runs as this test)."""
    readme = open(os.path.join(os.path.dirname(DOC), os.pardir, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Predict how your PyTorch model trains") :]
    doc = open(DOC, encoding="utf-8").read()
    assert re.search(r"```python\n(.*?)```", section, re.S).group(1) == re.search(
        r"```python\n(.*?)```", doc, re.S
    ).group(1)

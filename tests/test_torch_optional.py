"""torch is an optional extra: ``import ntksolve`` (and the scikit-learn import) never imports it,
and ``ntksolve.torch`` without it is an ImportError naming the extra. Runs without torch."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_import_ntksolve_does_not_import_torch():
    out = _run(
        "import sys, ntksolve\n"
        "import ntksolve.sklearn.mlp_import, ntksolve.nets.trained_layers\n"
        "net = ntksolve.MLP((4,)); p = net.init(2, random_state=0)\n"
        "ntksolve.empirical_ntk(net, p, [[1.0, 2.0]])\n"
        "print('torch' in sys.modules)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_ntksolve_torch_without_torch_names_the_extra():
    out = _run(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "try:\n"
        "    import ntksolve.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'ntksolve[torch]'" in out.stdout and "ntksolve.torch" in out.stdout

#!/usr/bin/env bash
# Build the libraries the benchmarks measure against, each in a virtual environment of its own:
# their version pins clash with ours, and they are never dependencies of ntksolve.
#
#   bash benchmarks/make_peers.sh [DIR]        (default: $NTKSOLVE_PEERS or /tmp/ntk-peers)
#
#   DIR/nt     neural-tangents 0.6.5 on JAX 0.4.23, CPU (the newest JAX it runs on; it needs
#              numpy 1.26 and scipy 1.11)
#   DIR/torch  PyTorch, CPU build
#
# A benchmark runs a peer as a subprocess with DIR/<peer>/bin/python, times it the same way as
# ntksolve (warm-up call excluded, median of several, results blocked on), and reads the time back.
set -euo pipefail
dir=${1:-${NTKSOLVE_PEERS:-/tmp/ntk-peers}}
mkdir -p "$dir"
if [ ! -f "$dir/nt/.ok" ]; then
  python3 -m venv "$dir/nt"
  "$dir/nt/bin/pip" install -q "jax[cpu]==0.4.23" "jaxlib==0.4.23" "neural-tangents==0.6.5"
  "$dir/nt/bin/pip" install -q "numpy==1.26.4" "scipy==1.11.4" "ml_dtypes==0.5.1" threadpoolctl
  "$dir/nt/bin/python" -c "import neural_tangents as nt; print('neural-tangents', nt.__version__)"
  touch "$dir/nt/.ok"
fi
if [ ! -f "$dir/torch/.ok" ]; then
  python3 -m venv "$dir/torch"
  # The CPU build: from PyTorch's CPU index where it is reachable, else a CPU wheel pip can find.
  "$dir/torch/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || "$dir/torch/bin/pip" install -q "torch==2.13.0+cpu"
  "$dir/torch/bin/pip" install -q numpy
  "$dir/torch/bin/python" -c "import torch; print('torch', torch.__version__)"
  touch "$dir/torch/.ok"
fi
echo "peers ready under $dir"

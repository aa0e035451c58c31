"""Every tunable threshold of ntksolve in one place (house rule: one config module).

Each value carries the reason for its size.
"""
from __future__ import annotations

#: Largest fraction of the machine's available memory a single output array may take before we
#: refuse with a MemoryError. Beyond half, the caller's own copies and the solver's
#: decompositions (which need a few more N x N arrays) would no longer fit.
MAX_OUTPUT_MEMORY_FRACTION = 0.5

#: Gauss-Hermite node pairs whose product weight (the weights normalised to sum 1) is below this are
#: skipped. Activations grow at most linearly, so a skipped term contributes below ~1e-20 in
#: total, far under the 1e-8 the rule is held to, while a third of the 2-D nodes are saved.
GH_PAIR_WEIGHT_CUTOFF = 1e-22

#: Adaptive Gauss-Hermite order ``n = GH_ORDER_BASE + slope * max(s_max, 1)`` (``s_max`` the largest
#: variance any layer integrates over), used when no order is given. Measured at the worst
#: correlations (c = +-1, 0) against the erf closed form and, for tanh, against a 350-node rule:
#: erf needs n = 48 / 80 / 128 / 200 for 1e-8 at s = 1 / 2 / 3 / 5, so slope 40 (56, 96, 136, 216)
#: keeps a 10x margin, and suffices for sigmoid, gelu, softplus (errors <= 3e-15 there). tanh
#: (poles at +-i pi/2 in u) converges slower: 1e-9 needs n = 95 / 180 / 260 at s = 1 / 2 / 3, hence
#: slope 85; at s = 5 the cap leaves it at ~1e-8.
GH_ORDER_BASE = 16
GH_ORDER_PER_VARIANCE = 40
GH_ORDER_PER_VARIANCE_TANH = 85
#: Beyond this order (variances above 7.6) the rule is capped and a warning says it may be inexact;
#: numpy's hermegauss overflows to NaN weights from about 400 nodes.
GH_ORDER_MAX = 320

#: Default number of input rows per block of activations/deltas in the empirical NTK when the whole
#: set of activations would exceed this many bytes.
EMPIRICAL_BLOCK_BYTES = 2 * 1024**3

"""Every tunable threshold of ntksolve in one place (house rule: one config module).

Each value carries the reason for its size.
"""
from __future__ import annotations

#: Largest fraction of the machine's available memory a single output array may take before we
#: refuse with a MemoryError. Beyond half, the caller's own copies and the solver's
#: decompositions (which need a few more N x N arrays) would no longer fit.
MAX_OUTPUT_MEMORY_FRACTION = 0.5

#: Gauss-Hermite nodes per dimension for the 2-D quadrature of smooth activations. 48 nodes per axis
#: reach 1e-9 against the erf closed form for variances up to 5 (tests/test_analytic.py).
QUADRATURE_ORDER = 48

#: Default number of input rows per block of activations/deltas in the empirical NTK when the whole
#: set of activations would exceed this many bytes.
EMPIRICAL_BLOCK_BYTES = 2 * 1024**3

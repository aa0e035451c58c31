"""Every tunable threshold of ntksolve in one place (house rule: one config module).

Each value carries the reason for its size.
"""

from __future__ import annotations

#: Largest fraction of the machine's available memory a single output array may take before we
#: refuse with a MemoryError. Beyond half, the caller's own copies and the solver's
#: decompositions (which need a few more N x N arrays) would no longer fit.
MAX_OUTPUT_MEMORY_FRACTION = 0.5

#: Largest fraction of the available memory a whole computation's peak (several arrays alive at
#: once, e.g. an estimator's fit) may take: the rest is the interpreter's and the caller's.
MAX_PEAK_MEMORY_FRACTION = 0.8

#: How many N x N kernels are alive at the peak of an in-memory ``fit``, measured (numpy's
#: allocations under tracemalloc at N = 1500, and the resident size at N = 6000) over one float64
#: kernel: 2.0-2.2 for the analytic kernel (kernel, eigenvectors, LAPACK's copy), 4.2 for the
#: empirical one in a fresh process (the kernel, its two Gram buffers and, at N = 1500 and width
#: 512, a kernel's worth of activations, derivatives and deltas: scratch arrays the workspace keeps
#: for the next call, see ``WORKSPACE_BYTES``), 5.1-5.4 for NTKRegressorCV (the full kernel plus
#: each fold's kernel and decomposition), 2.0 for the cross-entropy classifier. Rounded up.
FIT_PEAK_KERNELS = {"analytic": 3.0, "empirical": 4.5, "cv": 6.0, "log_loss": 3.0}

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
#: Beyond this order (variances above 7.6) the rule is capped, and larger variances are refused;
#: numpy's hermegauss overflows to NaN weights from about 400 nodes.
GH_ORDER_MAX = 320

#: Nodes of the Gauss rule of the Kolmogorov distribution through which tanh, sigmoid and softplus
#: are scale mixtures of Gaussian closed forms (``ntksolve._jit.expectations``). Worst error of the
#: layer maps against a 56-node rule, over variances 1e-6 ... 1e8 and all correlations: 16 nodes
#: 7e-10, 20 nodes 2e-11, 24 nodes 7e-13; independent of the variance, so no adaptive order.
LOGISTIC_MIXTURE_NODES = 24

#: Largest pre-activation variance ``Sigma^l(x, x)`` (any layer, any point) the analytic kernels
#: accept; larger ones raise a ValueError before any pair is computed. Products of two variances
#: must stay finite in float64 (1.8e308), with room for the layer maps' other factors.
ANALYTIC_MAX_VARIANCE = 1e150
#: Smallest positive pre-activation variance the analytic kernels accept before relu and the abrelu
#: family (leaky relu, abs), whose layer maps multiply two variances: below, the product underflows
#: float64 (2.2e-308) and the map reads the pair as one of zero variance (the NTK's relu' term
#: dropped: half the kernel, or 0). Smaller ones raise a ValueError; a variance of exactly 0 is exact.
ANALYTIC_MIN_VARIANCE = 1e-150
#: The same for the bounded activations (erf, tanh, sigmoid), whose NTK at a nearly parallel pair
#: hangs on the determinant ``s11 s22 - s12^2 ~ s``: rounding the covariances perturbs it by about
#: ``eps s^2``, a relative error of ``eps s`` in the NTK (measured against 60-digit arithmetic on
#: pairs differing in one coordinate by 1e-15 ... 1e-3 relative, d = 3 and 32, depth 2, erf: worst
#: 5e-9 at s = 1e7, 3e-8 at 1e8, 5e-6 at 1e10, 4e-2 at 1e14). This bound keeps it below 1e-8.
ANALYTIC_MAX_VARIANCE_BOUNDED = 1e7

#: Default number of input rows per block of activations/deltas in the empirical NTK when the whole
#: set of activations would exceed this many bytes.
EMPIRICAL_BLOCK_BYTES = 2 * 1024**3

#: Columns per block column of a symmetric Gram product (``None``: no blocking) ``A A^T`` (``ntksolve.nets.gram_terms.gram``):
#: each block column is one GEMM onto the lower triangle and its diagonal block, which wastes
#: ``GRAM_BLOCK_ROWS / N`` of SYRK's FLOPs but runs at GEMM speed; up to this many rows, numpy's SYRK.
#: Measured 2026-12-01 (2 cores, OpenBLAS 0.3.31, four interleaved rounds of 5, median GFLOP/s of
#: SYRK's FLOP count), ``A`` of 1024 x 2048 / 2560 x 1024: float64 SYRK 62-78 / 68-71, block columns
#: of 256 71-73 / 79-85, of 512 64-68 / 78-83; float32 SYRK 117-130 / 141-151, block columns of 256
#: 134-136 / 160-173, of 512 119-123 / 157-165 (GEMM: 88-104 / 176-208). Block rows (thin GEMMs of
#: ``nb`` rows) measured 2-10 % slower than block columns, block rows with SYRK diagonal blocks as well.
#: Inside the whole NTK, though (N = 1024, width 2048, three layers, interleaved, bench_ntk.py
#: --grams-only), block columns of 256 took 1.07 s against SYRK's 0.60 s in float64 and 0.32 s against
#: 0.34 s in float32 (and lost in both dtypes while other jobs shared the cores: one BLAS call per block
#: and each a thread barrier). So the default is ``None``: numpy's SYRK, one call per Gram product.
GRAM_BLOCK_ROWS = None

#: The empirical NTK splits its work between Python threads with single-threaded BLAS
#: (``ntksolve.kernels.empirical_terms``); a block of fewer rows than this per thread stays on one
#: thread, where the pool's start-up would cost more than it saves.
EMPIRICAL_THREAD_MIN_ROWS = 64
#: ... and a phase (the features of a block, the Gram products of a tile) of fewer FLOPs than this
#: stays on BLAS's own threads. Right after other multi-threaded BLAS work, OpenBLAS's idle threads
#: spin for a while (about 0.2 s measured) and take a share of the cores from ours: measured
#: 2026-12-01 (2 cores, 2 threads, N x width, three layers), threads against BLAS threads when
#: calls repeat: 0.96 at 128 x 512, 0.97 at 256 x 512, 1.10 at 512 x 512, 1.30 at 1024 x 512, 1.05 at
#: 512 x 2048; alternated with BLAS-threaded calls: 0.6 at 256 x 512 to 0.83 at 1024 x 512, 1.02 at
#: 1024 x 2048 float64. A phase of this many FLOPs takes about 0.1 s, long enough to gain on the whole.
EMPIRICAL_THREAD_MIN_FLOPS = 1e10

#: Diagonal blocks per thread of a symmetric Gram product split between threads
#: (``ntksolve.nets.gram_terms.pieces``): the blocks are SYRKs, the rest GEMMs, which single-threaded
#: OpenBLAS runs faster (measured 46 against 52 GFLOP/s float64, 83 against 100 float32), but more
#: blocks make smaller GEMMs. Measured 2026-12-01 (N = 1024, width 2048, three layers, 2 threads,
#: interleaved medians of 7), seconds per NTK for 1 / 2 / 4 / 8 blocks: float64 0.498 / 0.503 /
#: 0.513 / 0.545, float32 0.273 / 0.271 / 0.283 / 0.294.
GRAM_DIAGONAL_BLOCKS = 1

#: Bytes of scratch buffers (the empirical NTK's activations, deltas and Gram buffers) kept from one
#: call to the next (``ntksolve._workspace``), sparing the page faults of fresh arrays; 0: none kept.
WORKSPACE_BYTES = 256 * 1024**2

# --- closed-form dynamics (ntksolve.dynamics) ------------------------------------------------------

#: LAPACK driver of the symmetric eigendecomposition. Measured 2026-11-29 at N = 2048, 2 cores, float64:
#: evd 0.89 s, evr 4.0 s, ev 8.2 s, numpy.linalg.eigh 0.89 s (it also calls syevd).
EIGH_DRIVER = "evd"

#: Default relative tolerance of the Krylov path (per requested vector, a-posteriori). 1e-10 gives
#: ≤ 1e-8 relative error on whole trajectories with margin (tests/test_dynamics.py).
KRYLOV_TOL = 1e-10

#: Relative asymmetry ``max|K − Kᵀ| / max|K|`` accepted (and symmetrised) as rounding, in units
#: of √ε of the dtype (1.5e-8 in float64): kernels assembled in tiles differ from symmetric by
#: about ``ε·depth``, far below; a genuinely non-symmetric matrix is far above.
SYMMETRY_RTOL_SQRT_EPS = 1.0

#: Tile side of the symmetry check: two 256 × 256 float64 tiles (1 MiB) stay in L2/L3 cache.
SYMMETRY_TILE = 256

#: Cost model of ``method="auto"`` (seconds; ``ntksolve.dynamics.solvers.auto_method``), priced with
#: the actual sizes of each prediction call (times, test points, target columns). The constants are
#: machine rates, so they only need the right order of magnitude: they move the crossover between
#: eigh and krylov, not the answer. Fitted 2026-11-29 on a 2-core machine, float64:
#: ``scipy.linalg.eigh(driver="evd")`` 0.885 s at N = 2048 → 1.03e-10 · N³;
#: ``Θ @ x`` 12 ms at N = 4096 (memory-bound, 8 bytes per entry at 11 GB/s) → 7.2e-10 · N²;
#: ``Θ @ X`` with 256 columns 0.225 s at N = 4096 → 38 GFlop/s → 2.6e-11 s per flop.
AUTO_EIGH_SECONDS_PER_N3 = 1.03e-10
AUTO_MATVEC_SECONDS_PER_N2 = 7.2e-10
AUTO_SECONDS_PER_FLOP = 2.6e-11
#: Python overhead of one Lanczos step per column (reorthogonalisation calls, bookkeeping).
AUTO_LANCZOS_STEP_OVERHEAD = 4e-5
#: Krylov dimension assumed by the cost model. Measured on the analytic ReLU NTK (3 layers, d = 32):
#: 24 at N = 1024 and 4096 for 50 times up to 1e3 steps at η = 1; 80–90 at N = 3000 with times up to
#: 1e6 and ``t = ∞`` (kernel regression, conjugate gradients). 100 prices the harder case.
AUTO_KRYLOV_ITERATIONS = 100
#: Below this size the decomposition is always cheap enough (tens of ms): eigh, decided at
#: construction (the decomposition is then cached across calls).
AUTO_MIN_KRYLOV_SIZE = 512

# --- Lanczos (dynamics/krylov.py) ----------------------------------------------------------------

#: Iterations between two a-posteriori convergence checks. Each check eigendecomposes the small
#: ``m × m`` tridiagonal matrix (``O(m²)``); checking every 8 steps keeps that below 5 % of the
#: products with an ``N ≥ 1000`` kernel, and costs at most 8 extra products at the end.
LANCZOS_CHECK_EVERY = 8

#: A step whose new direction has norm below this multiple of ``‖T_m‖·ε`` found an invariant
#: subspace (a "lucky breakdown"): the approximation is then exact. With full
#: reorthogonalisation the residual direction of an exhausted space is rounding, of size about
#: ``√N ε ‖Θ‖``; 100·√N leaves a margin.
LANCZOS_BREAKDOWN_FACTOR = 100.0

# --- tiled kernels and product-only solvers (dask/, dynamics/cg.py, dynamics/nystrom.py) ----------

#: Seconds to wait for a scheduler given by address before a ConnectionError. A healthy scheduler
#: answers in milliseconds on a LAN; a few seconds covers a busy one without leaving a user with a
#: typo staring at a hung call.
CONNECT_TIMEOUT_S = 5.0

#: Default number of Nyström landmarks (capped at N). The preconditioned system's condition number
#: is about ``(lambda_{m+1} + mu) / mu`` (Frangella et al. 2023); 2000 landmarks cost ``N m`` kernel
#: entries and ``N m^2`` flops once (at N = 50 000: 1e8 entries, 2e11 flops, 0.8 GB), small next
#: to the ``N^2 / 2`` entries of the kernel, and bring a ridge of 1e-3 down to tens of iterations
#: on smooth data.
DEFAULT_LANDMARKS = 2000

#: Default relative residual of the CG solve for ``t = inf`` (``ConjugateGradient``): predictions
#: carry about this relative error, far below what a float32-stored kernel or the data itself justify.
DEFAULT_CG_TOL = 1e-6

#: Fraction of the cluster's memory (sum of the workers' limits, or the memory available now for a
#: local scheduler) that the persisted tiles may take; the rest is for the tile computations'
#: temporaries and Dask's own buffers (distributed pauses a worker at 80 % by default).
TILE_MEMORY_FRACTION = 0.6

# --- real gradient descent (training.py) ------------------------------------------------------------

#: Training stops as diverged when the loss is non-finite or exceeds this many times the larger
#: of the initial loss and half the targets' mean square (the loss of predicting 0). Stable
#: gradient descent never raises the loss above its start by more than rounding; below the
#: critical rate a transient overshoot of the top mode is at most a factor of a few. An unstable
#: mode grows geometrically, so it crosses 1e6 within tens of steps of becoming visible, long
#: before float64 overflows (and with room for float32, whose range ends near 1e38).
DIVERGENCE_FACTOR = 1e6

"""The memory this process may use: cgroup and ``RLIMIT_AS`` limits, and fit's real peak.

The peak factors of ``_config.FIT_PEAK_KERNELS`` are checked against the peak resident size that
a fit really reaches (``ru_maxrss``), measured in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ntksolve import _config, _validation


def _fake_cgroup(tmp_path, monkeypatch, files, self_cgroup):
    """Point the cgroup reader at a fake ``/sys/fs/cgroup`` tree."""
    root = tmp_path / "cg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp_path / "self_cgroup").write_text(self_cgroup)
    real_open = open

    def fake_open(path, *a, **kw):
        path = str(path)
        if path == "/proc/self/cgroup":
            return real_open(tmp_path / "self_cgroup", *a, **kw)
        if path.startswith("/sys/fs/cgroup"):
            return real_open(str(root) + path[len("/sys/fs/cgroup") :], *a, **kw)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", fake_open)


def test_cgroup_v2_limit_on_an_ancestor_is_honoured(tmp_path, monkeypatch):
    _fake_cgroup(
        tmp_path,
        monkeypatch,
        {
            "job/memory.max": str(3 << 30),
            "job/memory.current": str(1 << 30),
            "job/step/memory.max": "max",
            "job/step/memory.current": str(1 << 29),
        },
        "0::/job/step\n",
    )
    assert _validation._cgroup_headroom() == (3 << 30) - (1 << 30)
    assert _validation.available_memory() <= 2 << 30


def test_cgroup_v1_limit_and_no_limit(tmp_path, monkeypatch):
    _fake_cgroup(
        tmp_path,
        monkeypatch,
        {
            "memory/batch/memory.limit_in_bytes": str(5 << 30),
            "memory/batch/memory.usage_in_bytes": str(1 << 30),
        },
        "4:memory:/batch\n3:cpu,cpuacct:/batch\n",
    )
    assert _validation._cgroup_headroom() == 4 << 30


def test_no_cgroup_limit_reads_as_none(tmp_path, monkeypatch):
    _fake_cgroup(tmp_path, monkeypatch, {"memory.max": "max", "memory.current": "123"}, "0::/\n")
    assert _validation._cgroup_headroom() is None


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_fit_under_a_low_address_space_limit_is_a_clear_memory_error_before_work():
    # 1 200 points: one kernel is 11 MiB, the fit's peak about 33 MiB. Under a limit leaving
    # ~20 MiB of headroom the fit must refuse up front, naming the peak and the tiled way out.
    out = _run("""
        import resource, time, numpy as np
        import ntksolve
        from ntksolve import NTKRegressor
        from ntksolve._validation import _address_space_headroom
        size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (20 << 20), resource.RLIM_INFINITY))
        assert _address_space_headroom() <= 20 << 20
        X = np.random.default_rng(0).standard_normal((1200, 4)); y = X[:, 0]
        t0 = time.perf_counter()
        try:
            NTKRegressor().fit(X, y)
        except MemoryError as e:
            print('REFUSED', time.perf_counter() - t0, e)
    """)
    assert "REFUSED" in out.stdout, out.stdout + out.stderr
    assert "in-memory fit of NTKRegressor on 1200 points" in out.stdout and "chunks=" in out.stdout
    assert "at its peak" in out.stdout
    assert float(out.stdout.split()[1]) < 0.5  # refused before the kernel (no compile, no work)


@pytest.mark.parametrize("kernel", ["analytic", "empirical", "cv", "log_loss"])
def test_peak_factors_bound_the_measured_peak(kernel):
    # tracemalloc sees numpy's allocations (the kernels, decompositions and LAPACK work arrays),
    # not numba's compiler, so the peak is the fit's own, whatever the cache state.
    import tracemalloc

    from ntksolve import NTKClassifier, NTKRegressor, NTKRegressorCV

    n = 1500
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 8))
    y = X[:, 0] + 0.1 * rng.standard_normal(n)
    make = {
        "analytic": lambda: NTKRegressor(),
        "empirical": lambda: NTKRegressor(kernel="empirical"),
        "cv": lambda: NTKRegressorCV(),
        "log_loss": lambda: NTKClassifier(loss="log_loss", time=20.0),
    }[kernel]
    target = (y > 0).astype(int) + (y > 1) if kernel == "log_loss" else y
    make().fit(X[:20], target[:20])  # compile (or load) the kernels first
    tracemalloc.start()
    try:
        make().fit(X, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    measured = peak / (n * n * 8)
    assert measured <= _config.FIT_PEAK_KERNELS[kernel], (kernel, measured)
    assert measured > 0.4 * _config.FIT_PEAK_KERNELS[kernel], (kernel, measured)  # not a blanket overestimate

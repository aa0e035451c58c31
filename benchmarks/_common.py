"""Helpers shared by the benchmark scripts: timing, GEMM rate, peer subprocesses, tables."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

PEERS_DIR = os.environ.get("NTKSOLVE_PEERS", "/tmp/ntk-peers")


def best_time(fn, *, repeat: int = 3, warmup: int = 1):
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def interleaved(contenders, repeats):
    """``{name: (median seconds, last output)}`` of each callable in ``contenders``, run in turn
    (one warm-up each, then ``repeats`` rounds), so that a change in outside load touches all alike."""
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    outs = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (float(np.median(times[name])), outs[name]) for name in contenders}


def interleaved_pair(fa, fb, repeats):
    """Median seconds of ``fa`` and ``fb`` run alternately (:func:`interleaved`)."""
    out = interleaved({"a": fa, "b": fb}, repeats)
    return out["a"][0], out["b"][0]


def gemm_rate(dtype=np.float64, n: int = 2048, repeat: int = 5) -> float:
    """The machine's measured GEMM rate in FLOP/s: best of ``repeat`` n x n x n products."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(dtype)
    B = rng.standard_normal((n, n)).astype(dtype)
    A @ B
    best = min(_timed(lambda: A @ B) for _ in range(repeat))
    return 2.0 * n**3 / best


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def peer_python(name: str):
    """Path to a peer's python (built by ``benchmarks/make_peers.sh``), or None."""
    path = os.path.join(PEERS_DIR, name, "bin", "python")
    return path if os.path.exists(os.path.join(PEERS_DIR, name, ".ok")) and os.path.exists(path) else None


def run_peer(python: str, code: str, timeout: float = 900.0):
    """Run ``code`` in a peer's interpreter; it must print one float (seconds) last. None on failure."""
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-2000:])
        return None
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def table(rows, headers):
    """Render a markdown table (list of tuples) as a string."""
    cols = [headers] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(str(c[i])) for c in cols) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cols[1:]]
    return "\n".join(out)


def _fmt(v):
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)

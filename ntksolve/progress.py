"""Progress of a width sweep, in estimated work rather than steps."""

from __future__ import annotations

import sys
import time
from typing import Sequence

#: Seconds between two redraws of a bar: a few a second, so that drawing costs the sweep nothing.
REFRESH_S = 0.25


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """Running in a Jupyter kernel (whose stderr is no terminal, but which draws tqdm's widgets)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _flops(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}FLOP"
    return f"{x:.3g} FLOP"


class _Progress:
    """Progress in estimated work (floating-point operations), not steps: a step of width 8192
    costs a hundred times one of width 64, so a bar over steps runs fast and then crawls, and its
    ETA means nothing.

    ``works[i]`` is width ``i``'s estimated work (:func:`~ntksolve.sweep_checks._width_work`:
    its prediction, its steps and its recorded steps); the sweep's total is their sum.

    On a terminal (or in a Jupyter notebook) with tqdm: one bar over the sweep (its description
    names the width running, its ETA is the work left over the work per second so far) and one
    bar for the running width, each redrawn at most every :data:`REFRESH_S` seconds. Without a
    terminal (a log file, a pipe) or without tqdm: one plain line when each width starts and one
    when it ends (with the time left, estimated the same way), no redrawn bars. Disabled: nothing."""

    def __init__(self, enabled: bool, works: Sequence[float], widths: Sequence[int], stream=None):
        self.enabled = enabled
        self.works = [float(w) for w in works]
        self.widths = list(widths)
        self.total = float(sum(self.works))
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0.0
        self.bar = self.inner = None
        self._tqdm = None
        self._i = -1
        self._t0 = self._t_width = time.perf_counter()
        if not enabled or not (_is_tty(self.stream) or (stream is None and _in_notebook())):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._tqdm = tqdm
        self.bar = tqdm(
            total=self.total,
            unit="FLOP",
            unit_scale=True,
            desc="sweep (estimated work)",
            file=self.stream,
            dynamic_ncols=True,
            position=0,
            mininterval=REFRESH_S,
            smoothing=0.1,
        )

    def _desc(self, i: int) -> str:
        return f"width {self.widths[i]} ({i + 1}/{len(self.widths)})"

    def start_width(self, i: int) -> None:
        self._i = i
        self._t_width = time.perf_counter()
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(f"sweep: {self._desc(i)}", refresh=False)
            self.inner = self._tqdm(
                total=self.works[i],
                unit="FLOP",
                unit_scale=True,
                desc=self._desc(i),
                file=self.stream,
                dynamic_ncols=True,
                position=1,
                leave=False,
                mininterval=REFRESH_S,
            )
        else:
            share = self.works[i] / self.total if self.total else 0.0
            print(
                f"{self._desc(i)}: {share:.1%} of the sweep's estimated work ({_flops(self.works[i])})",
                file=self.stream,
                flush=True,
            )

    def advance(self, work: float) -> None:
        work = max(float(work), 0.0)
        self.done += work
        if self.bar is not None and work > 0:
            self.bar.update(work)  # tqdm redraws only every mininterval
            if self.inner is not None:
                self.inner.update(work)

    def remaining_s(self) -> float:
        """Seconds left, from the work left and the work per second so far (``nan`` before any)."""
        elapsed = time.perf_counter() - self._t0
        if self.done <= 0 or elapsed <= 0:
            return float("nan")
        return max(self.total - self.done, 0.0) * elapsed / self.done

    def end_width(self) -> None:
        """Count the rest of the width's estimate (the estimate is not exact) as done."""
        target = sum(self.works[: self._i + 1])
        if target > self.done:
            self.advance(target - self.done)
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        if self.enabled and self.bar is None and self._i >= 0:
            left = self.remaining_s()
            tail = "" if self._i + 1 >= len(self.widths) or left != left else f", about {left:.0f} s left"
            print(
                f"{self._desc(self._i)} done in {time.perf_counter() - self._t_width:.1f} s; sweep "
                f"{self.done / self.total if self.total else 1.0:.1%} of the estimated work{tail}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

"""Progress of a width sweep, in estimated work rather than steps."""
from __future__ import annotations

import sys
from typing import Sequence


class _Progress:
    """Progress in estimated work (floating-point operations), not steps: a step of width 8192
    costs a hundred times one of width 64, so a bar over steps runs fast and then crawls.

    With tqdm: one bar over the sweep (its ETA from the work done so far) and one per width;
    without it, one plain line per width on stderr."""

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
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self._tqdm = tqdm
        if tqdm is not None:
            self.bar = tqdm(total=self.total, unit="FLOP", unit_scale=True, desc="sweep (estimated work)",
                            file=self.stream, dynamic_ncols=True, position=0)

    def start_width(self, i: int) -> None:
        self._i = i
        w, n = self.widths[i], len(self.widths)
        desc = f"width {w} ({i + 1}/{n})"
        if not self.enabled:
            return
        share = self.works[i] / self.total if self.total else 0.0
        if self.bar is not None:
            self.bar.set_description(f"sweep: {desc}")
            self.inner = self._tqdm(total=self.works[i], unit="FLOP", unit_scale=True, desc=desc, file=self.stream,
                                    dynamic_ncols=True, position=1, leave=False)
        else:
            print(f"{desc}: {share:.1%} of the sweep's estimated work", file=self.stream, flush=True)

    def advance(self, work: float) -> None:
        work = max(float(work), 0.0)
        self.done += work
        if self.bar is not None and work > 0:
            self.bar.update(work)
            if self.inner is not None:
                self.inner.update(work)

    def end_width(self) -> None:
        """Count the rest of the width's estimate (the estimate is not exact) as done."""
        target = sum(self.works[: self._i + 1])
        if target > self.done:
            self.advance(target - self.done)
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        if self.bar is not None:
            self.bar.close()

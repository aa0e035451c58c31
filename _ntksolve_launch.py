"""The ``ntksolve`` console script's first module: it imports nothing heavy.

``import ntksolve`` loads numpy, scipy and numba, which takes a noticeable fraction of a second; a
Ctrl-C or SIGTERM in that time used to end in a Python traceback and exit status −2. This module
holds both signals from the first line of the program until the command's own handlers are in
place, so an interrupt while starting exits quietly with the documented status (130 for SIGINT,
143 for SIGTERM) and a one-line message, and an interrupt later is the command's to handle.
"""

import signal
import sys

_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_received = []
_previous = {}


def _hold(signum, frame):
    _received.append(signum)


# At import, not in main(): the console script imports this module first, so the signals are held
# from then on.
for _sig in _CODES:
    _old = signal.getsignal(_sig)
    if _old is not None and _old != signal.SIG_IGN:  # an ignored signal stays ignored (nohup, background)
        _previous[_sig] = _old
        signal.signal(_sig, _hold)


def main() -> int:
    received = _received
    try:
        from ntksolve.cli import main as run
    finally:
        for sig, old in _previous.items():
            signal.signal(sig, old)
        _previous.clear()
    if received:
        name = "Ctrl-C (SIGINT)" if received[-1] == signal.SIGINT else signal.Signals(received[-1]).name
        print(f"ntksolve: interrupted by {name} while starting; nothing was run", file=sys.stderr)
        return _CODES[received[-1]]
    return run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

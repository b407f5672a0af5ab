"""The console scripts' first code: the process answers SIGINT, SIGTERM and SIGHUP (its
terminal closing) from its first moments, before the heavy imports and the option parsing,
by ending at once with status 130 (nothing is written before a command starts).  Each
command then takes the signals over (``cli/common.py``: clean unwinding, temporary files
removed)."""

from __future__ import annotations

import os
import signal


def _end(signum, frame):
    os._exit(130)


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a command as Ctrl-C does: SIGHUP only where it is not ignored
    (``nohup qaft train …`` must outlive its terminal)."""
    hup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hup)


def _early() -> None:
    for sig in stop_signals():
        signal.signal(sig, _end)


def run() -> None:
    """``qaft-run``."""
    _early()
    from qaft.cli.run import main

    main()


def qaft() -> None:
    """``qaft``."""
    _early()
    from qaft.cli.develop import main

    main()

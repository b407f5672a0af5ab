"""The console scripts' first code: the process answers SIGINT and SIGTERM from its first
moments, before the heavy imports and the option parsing, by ending at once with status
130 (nothing is written before a command starts).  Each command then takes the signals
over (``cli/common.py``: clean unwinding, temporary files removed)."""

from __future__ import annotations

import os
import signal


def _end(signum, frame):
    os._exit(130)


def _early() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
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

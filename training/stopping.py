"""Stopping a training run between iterations, so that Ctrl-C or SIGTERM loses no work.

A signal that arrives in the middle of an optimizer step would leave the weights half
updated; the handlers here only note the request, and the loop (:mod:`qaft.training.loop`)
checks it at the next iteration boundary, writes its checkpoint and raises
:class:`TrainingInterrupted`. A second signal stops at once (the checkpoint written last
stays valid: checkpoints are renamed into place).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped on request after writing its checkpoint; ``--resume`` continues it."""

    def __init__(self, what: str, iteration: int, checkpoint: Path) -> None:
        super().__init__(
            f"{what} interrupted at step {iteration}: checkpoint {checkpoint} written; "
            "the same command with --resume continues it"
        )
        self.iteration = iteration
        self.checkpoint = checkpoint


class StopRequests:
    """Context manager: while inside, SIGINT, SIGTERM and SIGHUP (unless ignored: ``nohup``)
    set :attr:`requested`.

    Outside the main thread signals cannot be caught; there it does nothing and a signal
    behaves as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if s == signal.SIGHUP and signal.getsignal(s) is signal.SIG_IGN:
                    continue  # run under nohup: the terminal closing must not stop it
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

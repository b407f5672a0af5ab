"""What both command-line tools share: turning expected failures into one-line errors."""

from __future__ import annotations

import functools
import signal
import sys
import threading

import click

from qaft.runtime.errors import QaftError


def _terminate(signum, frame):
    raise KeyboardInterrupt


def fail_cleanly(fn):
    """Runs a command; a known failure prints ``error: …`` and exits 1, no traceback.

    SIGTERM is handled like Ctrl-C, so that an interrupted batch unwinds: temporary files
    are removed and every output already renamed into place is complete.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except (QaftError, OSError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            # a training run says where its checkpoint is and how to resume (TrainingInterrupted)
            click.echo(
                str(exc)
                or "interrupted: every file written so far is complete; "
                "rerun the same command to do the rest",
                err=True,
            )
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def print_models(entries: list[dict], as_json: bool) -> None:
    """The zoo listing of both tools: a JSON array, or one line per model."""
    import json

    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        click.echo(
            f"{e['name']:<10} quality {e['quality']}  λ={e['lmbda']:<8} stage {e['stage']}"
            f"  finetuned_for={e['finetuned_for']}  {e['path']}"
        )


def quantizer_options(fn):
    """``--quantizer``, ``--step`` and ``--q-lmbda``, as every coding command takes them."""
    fn = click.option(
        "--q-lmbda", type=float, help="λ of the quantizer search (default: the model's)."
    )(fn)
    fn = click.option(
        "--step", type=float, help="Quantizer step Δ (default: the model's measured one)."
    )(fn)
    return click.option(
        "--quantizer",
        type=click.Choice(["sq", "rdoq", "tcq", "tcq8"]),
        default="sq",
        show_default=True,
    )(fn)

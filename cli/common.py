"""What both command-line tools share: turning expected failures into one-line errors."""

from __future__ import annotations

import functools
import sys

import click

from qaft.runtime.errors import QaftError


def fail_cleanly(fn):
    """Runs a command; a known failure prints ``error: …`` and exits 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (QaftError, FileNotFoundError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

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

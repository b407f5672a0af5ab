"""What both command-line tools share: turning expected failures into one-line errors."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading

import click

from qaft.cli.entry import stop_signals
from qaft.runtime.errors import QaftError


def named(ctx: click.Context, param: click.Parameter, value):
    """Click callback of the options that name a model (``--model``, ``--ckpt``): an empty
    name would mean the current folder; it is refused as a usage error."""
    for v in value if isinstance(value, tuple) else (value,):
        if v == "":
            raise click.BadParameter("an empty name: give a bundled model's name or a path")
    return value


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _interrupted(exc: BaseException, hard: bool = False) -> None:
    """Prints what an interrupt leaves behind and exits 130, without waiting for work in
    flight: a thread inside ONNX Runtime or an image decoder cannot be stopped, so the
    process ends under it (its temporary files are removed first)."""
    from qaft.cli.outputs import remove_live_temporaries

    # ``hard``: a command thread is (or may be) still running; an interpreter shutdown under
    # it can abort in ONNX Runtime's destructors
    others = any(t.is_alive() for t in threading.enumerate() if t is not threading.current_thread())
    remove_live_temporaries(final=hard or others)
    # a training run says where its checkpoint is and how to resume (TrainingInterrupted)
    click.echo(
        str(exc)
        or "interrupted: every file written so far is complete; "
        "rerun the same command to do the rest",
        err=True,
    )
    if hard or others:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


def _run_in_thread(fn, args, kwargs):
    """Runs ``fn`` on a worker thread while the main thread waits in short, interruptible
    steps, so SIGINT and SIGTERM are seen within a fraction of a second even while the work
    sits in C code (ONNX Runtime, a blocking open) that Python cannot interrupt."""
    box: dict = {}
    done = threading.Event()

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            box["error"] = exc
        finally:
            done.set()

    # An Event, not Thread.join: a join interrupted by the signal can mark a running thread
    # as stopped (CPython's tstate-lock handling).
    threading.Thread(target=target, name="qaft-command", daemon=True).start()
    while not done.wait(0.1):
        pass
    if "error" in box:
        raise box["error"]
    return box.get("result")


#: The modules of pyproject.toml's optional extras, by the extra that installs them: a
#: command that needs one in an install without it says what to install.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        ("torch", "onnx", "pytorch_msssim", "bjontegaard", "matplotlib", "scipy"), "train"
    ),
    "ray": "distributed",
    "tensorrt": "gpu",
    "imagecodecs": "anchors",
}


def error_line(exc: Exception) -> str:
    """The message of a failure as ``fail_cleanly`` prints it: a :class:`QaftError`'s own
    line; an operating system's error as ``PATH: reason`` (``[Errno 28] No space left on
    device`` is Python's wording, not a message for a user)."""
    if isinstance(exc, QaftError) or not isinstance(exc, OSError) or not exc.strerror:
        return str(exc)
    if exc.filename is None:
        return exc.strerror
    return f"{os.fsdecode(exc.filename)}: {exc.strerror}"


def fail_cleanly(fn=None, *, threaded=False):
    """Runs a command; a known failure prints ``error: …`` and exits 1, no traceback.

    SIGTERM is handled like Ctrl-C.  With ``threaded`` (a bool, or a function of the
    command's keyword arguments) the command runs on a worker thread
    and an interrupt ends the process within a second (exit 130), whatever it was doing;
    without it (training, which stops at a step boundary by itself) the interrupt unwinds
    the command.  Either way a file under its final name is always complete.
    """
    if fn is None:
        return functools.partial(fail_cleanly, threaded=threaded)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = None
        main = threading.current_thread() is threading.main_thread()
        if main:  # the console script ended the process on any (cli/entry.py) until now
            previous = {
                sig: signal.signal(
                    sig, signal.default_int_handler if sig == signal.SIGINT else _terminate
                )
                for sig in stop_signals()
            }
        in_thread = main and (threaded(kwargs) if callable(threaded) else threaded)
        try:
            if in_thread:
                return _run_in_thread(fn, args, kwargs)
            return fn(*args, **kwargs)
        except (QaftError, OSError) as exc:
            click.echo(f"error: {error_line(exc)}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            extra = EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            click.echo(
                f"error: this command needs {exc.name}, which is not installed: "
                f'pip install ".[{extra}]" from a qaft checkout (README, Install)',
                err=True,
            )
            sys.exit(1)
        except RecursionError:  # a JSON file nested a hundred thousand levels deep
            click.echo("error: an input is nested too deeply to read", err=True)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            _interrupted(exc, hard=in_thread)
        finally:
            for sig, handler in (previous or {}).items():
                signal.signal(sig, handler)

    return wrapper


def print_models(entries: list[dict], as_json: bool, install: str = "") -> None:
    """The zoo listing of both tools: a JSON array, or one line per model (the default
    marked, with the Kodak figures of the quantizer it codes with by default, and a mark
    on those not installed here, which ``install`` says how to install)."""
    import json

    from qaft.runtime.zoo import DEFAULT_MODEL

    entries = [{**e, "default": e["name"] == DEFAULT_MODEL} for e in entries]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(f"{'model':<10}{'quality':>8}{'Kodak bpp':>11}{'PSNR dB':>9}  quantizer  stage  λ")
    for e in entries:
        k = e.get("kodak") or {}
        bpp, psnr = k.get("bpp"), k.get("psnr")
        click.echo(
            f"{e['name'] + (' *' if e['default'] else ''):<10}{e['quality']:>8}"
            f"{(f'{bpp:.3f}' if bpp is not None else '-'):>11}"
            f"{(f'{psnr:.2f}' if psnr is not None else '-'):>9}  "
            f"{k.get('quantizer') or e.get('finetuned_for') or 'sq':<9}  {e['stage']:>5}  "
            f"{e['lmbda']}" + ("" if e.get("installed", True) else "  (not installed)")
        )
    click.echo("* the default; figures: mean of the 24 Kodak images, real files")
    if not all(e.get("installed", True) for e in entries):
        click.echo(f"(not installed): they come with {install}")


def quantizer_choice(tunable: bool = False) -> click.Choice:
    """The registry's quantizers (with ``tunable``, those with settings to tune)."""
    from qaft.runtime.quantizers import QUANTIZERS

    return click.Choice([n for n, q in QUANTIZERS.items() if q.grid.tunable or not tunable])


def quantizer_option(fn):
    """``--quantizer``: by default the model's own (a stage-2 model's finetuned one, else
    sq)."""
    return click.option(
        "--quantizer",
        type=quantizer_choice(),
        default=None,
        help="Quantizer (default: the one the model was finetuned for, else sq).",
    )(fn)


def quantizer_options(fn):
    """``--quantizer``, ``--step`` and ``--q-lmbda``, as every coding command takes them."""
    fn = click.option(
        "--q-lmbda", type=float, help="λ of the quantizer search (default: the model's)."
    )(fn)
    fn = click.option(
        "--step", type=float, help="Quantizer step Δ (default: the model's measured one)."
    )(fn)
    return quantizer_option(fn)


def model_quantizer(name: str, finetuned_for: str | None, asked: str | None) -> str:
    """The quantizer to code ``name``'s files with; a mismatch asked for is said once."""
    from qaft.runtime.quantizers import quantizer_for

    quantizer, warning = quantizer_for(name, finetuned_for, asked)
    if warning:
        click.echo(warning, err=True)
    return quantizer

"""Where a batch command's outputs go, and how they are written so that nothing a user had is
lost.

The rules (``docs/robustness.md``, "Outputs"):

* Every output path is decided before anything is written.  Two inputs that map to one
  output name, or an output that is an input of the same run, stop the command at once.
* An output that already exists is looked at, not trusted by its name: one this tool made
  from the same input with the same settings is *up to date* (skipped); one it made
  otherwise is *stale* (replaced with ``--force``, else reported); a file it did not make is
  *foreign* and is never replaced, ``--force`` or not.
* Data goes to a fresh temporary file (``mkstemp``: an unpredictable name, created with
  ``O_EXCL``, so a planted name or symlink is never followed), then takes its final name by
  a hard link that fails if a file appeared there meanwhile, or, where replacing was asked
  for, by a rename.  A file under its final name is always complete.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from qaft.runtime.errors import QaftError
from qaft.runtime.files import write_file

#: Errors after which no later file can be written either: the batch stops with a summary.
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}

# Temporary files being written, removed by an interrupt before the process ends under the
# thread that writes them (cli/common.py); process-wide like the signal that needs them.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.RLock()  # _creating holds it while _track takes it
_STOPPED = threading.Event()


class State(enum.Enum):
    """What is at an output path before the run writes it."""

    ABSENT = "absent"
    UP_TO_DATE = "up to date"
    STALE = "stale"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Job:
    """One input and the output it becomes."""

    src: Path
    dest: Path


def _key(path: Path) -> str:
    # case-folded: on a case-insensitive file system x.qaft and X.qaft are one file
    return os.path.normcase(os.path.abspath(path)).casefold()


def plan(
    files: Iterable[tuple[Path, Path]],
    out_dir: Path,
    suffix: str,
    inputs: Iterable[Path] = (),
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """(input, path relative to its root) pairs -> (jobs writing ``out_dir/rel.suffix``,
    [(input, why it has no job)]).

    Decided before anything is written: inputs that map to one output name (``a/x`` and
    ``b/x``, ``x.png`` and ``x.PNG``) all fail, none of them is written; so does one whose
    output would overwrite an input of the run (``inputs``)."""
    by_dest: dict[str, list[tuple[Path, Path]]] = {}
    read = {_key(p) for p in inputs} | {os.path.realpath(p) for p in inputs}
    root = os.path.realpath(out_dir)
    for src, rel in files:
        dest = out_dir / rel.with_suffix(suffix)
        by_dest.setdefault(_key(dest), []).append((src, dest))
    jobs, refused = [], []
    for group in by_dest.values():
        if len(group) > 1:
            names = ", ".join(str(src) for src, _ in group)
            for src, dest in group:
                refused.append((src, f"{names} would all be written to {dest}: rename them"))
            continue
        src, dest = group[0]
        parent = os.path.realpath(dest.parent)
        if _key(dest) in read or os.path.realpath(dest) in read:
            refused.append((src, f"{dest} is an input of this run and would be overwritten"))
        elif parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
            refused.append((src, f"{dest} would be written outside {out_dir} (a symlink)"))
        else:
            jobs.append(Job(src, dest))
    return jobs, refused


def sort_jobs(
    jobs: list[Job], state_of: Callable[[Job], State], force: bool
) -> tuple[list[Job], int, list[tuple[Path, str]]]:
    """(jobs to run, number up to date, [(input, why not)]) from what is at each output."""
    todo, fresh, refused = [], 0, []
    for job in jobs:
        try:
            state = state_of(job)
        except OSError as exc:
            refused.append((job.src, f"cannot look at {job.dest} ({exc.strerror or exc})"))
            continue
        except QaftError as exc:  # one file's trouble is that file's failure, never the batch's
            refused.append((job.src, f"cannot look at {job.dest} ({exc})"))
            continue
        if state is State.UP_TO_DATE and not force:
            fresh += 1
        elif state is State.FOREIGN:
            refused.append(
                (
                    job.src,
                    f"{job.dest} exists and was not written by qaft-run; it is left as it "
                    "is (move it, or choose another --out)",
                )  # fmt: skip
            )
        elif state is State.STALE and not force:
            refused.append(
                (
                    job.src,
                    f"{job.dest} is stale (made from another input or with other "
                    "settings): --force replaces it",
                )  # fmt: skip
            )
        else:
            todo.append(job)
    return todo, fresh, refused


def exists(path: Path) -> bool:
    """Whether anything, a dangling symlink included, is at ``path``."""
    return os.path.lexists(path)


def _track(tmp: str, live: bool) -> None:
    with _LIVE_LOCK:
        (_LIVE.add if live else _LIVE.discard)(tmp)


@contextlib.contextmanager
def _creating():
    """Held while a temporary file is made and tracked: after an interrupt's final cleanup
    no writer still running may start one (the process is about to end under it)."""
    with _LIVE_LOCK:
        if _STOPPED.is_set():
            raise InterruptedError("interrupted")
        yield


def write(dest: Path, data: bytes, replace: bool = False) -> None:
    """Writes ``data`` to ``dest`` by :func:`qaft.runtime.files.write_file` (never over a
    file that is there by then, unless ``replace``), its temporary file known to an
    interrupt."""
    write_file(dest, data, replace, on_temporary=_track, guard=_creating())


def is_input(path: Path, inputs: Iterable[Path]) -> bool:
    """Whether ``path`` names one of ``inputs`` (by its name, case-folded, or by what it
    resolves to)."""
    key, real = _key(path), os.path.realpath(path)
    return any(_key(p) == key or os.path.realpath(p) == real for p in inputs)


def is_regular(path: Path) -> bool:
    """Whether a regular file, not a link to one, is at ``path``."""
    import stat

    return stat.S_ISREG(os.lstat(path).st_mode)


def write_json(path: Path, text: str, inputs: Iterable[Path], ours: Callable[[object], bool]):
    """Writes a results file through :func:`write`, replacing only a file that ``ours``
    accepts as this kind of results (a JSON document), never an input of the run, a
    symlink, or anything else: :class:`QaftError`."""
    import json

    if is_input(path, inputs):
        raise QaftError(f"{path} is an input of this run: choose another --json")
    if exists(path):
        if not is_regular(path):
            raise QaftError(f"{path} exists and is not a regular file: choose another --json")
        try:
            with open(path, "rb") as f:
                old = json.loads(f.read(1 << 26))
        except (OSError, ValueError, RecursionError):
            old = None
        if not ours(old):
            raise QaftError(f"{path} exists and is not a results file of this command; it is "
                            "left as it is (choose another --json)")  # fmt: skip
    write(path, text.encode(), replace=True)


def check_new_file(path: Path, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuses, before any work, to write a named file over an input of the command, over
    anything but a regular file (a symlink, a folder, a FIFO), or over an existing file
    without ``--force``."""
    path = Path(path)
    if is_input(path, inputs):
        raise QaftError(f"{path} is an input of this command: choose another --out")
    if exists(path):
        if not is_regular(path):
            raise QaftError(f"{path} exists and is not a regular file; it is left as it is")
        if not force:
            raise QaftError(f"{path} exists: --force replaces it")


def printable(line: str) -> str:
    """``line`` with control characters escaped, so that a file name cannot forge lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in line)


def write_error(exc: OSError, dest: Path) -> str:
    """One line for a failed write of ``dest``."""
    if isinstance(exc, FileExistsError):
        return f"{dest} appeared during the run; it is left as it is (--force replaces it)"
    return f"cannot write {dest} ({exc.strerror or exc})"


def remove_live_temporaries(final: bool = False) -> None:
    """Removes the temporary files still being written (on an interrupt); ``final`` (the
    process ends under threads still running) refuses any new one from then on."""
    with _LIVE_LOCK:
        if final:
            _STOPPED.set()
        for tmp in list(_LIVE):
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _LIVE.clear()

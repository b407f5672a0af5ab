"""Writing a file so that nothing is lost and nothing is redirected: the one way qaft puts
bytes on disk, for the runtime's commands and for training's checkpoints alike.

Data goes to a temporary file made by ``mkstemp`` in the destination's folder (an
unpredictable name created with ``O_EXCL``, so a symlink planted there is never followed),
its mode set from the umask, then takes its final name: by a hard link that fails if
anything (a dangling symlink included) is at that name, or, where replacing was asked for,
by a rename (which replaces a symlink itself, never its target).  A file under its final
name is always complete.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO

# What os.link says on a file system without hard links (FAT, some network mounts).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS}


def umask() -> int:
    """This process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


def write_file(
    dest: str | Path,
    data: bytes | Callable[[BinaryIO], None],
    replace: bool = False,
    on_temporary: Callable[[str, bool], None] | None = None,
    guard: AbstractContextManager | None = None,
) -> None:
    """Writes ``data`` (bytes, or a function that writes into the open file) to ``dest``.

    Without ``replace`` anything at ``dest`` by then is left alone: :class:`FileExistsError`.
    A folder at ``dest`` is :class:`IsADirectoryError` either way.  ``on_temporary(name,
    live)`` hears of the temporary file when it is made and when it is gone (so an interrupt
    can remove it); ``guard`` is held while the temporary file is made and announced, so that
    an interrupt's cleanup, holding it too, never runs between the two."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with guard or nullcontext():
        fd, tmp = tempfile.mkstemp(prefix=".qaft-", suffix=".part", dir=dest.parent)
        if on_temporary:
            on_temporary(tmp, True)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600 is for the temporary only
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
        if os.path.isdir(dest) and not os.path.islink(dest):
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(dest))
        if replace:
            os.replace(tmp, dest)
            return
        try:
            os.link(tmp, dest)  # fails if dest exists, even as a dangling symlink
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            # a file system without hard links: check, then rename
            if os.path.lexists(dest):
                raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(dest)) from None
            os.rename(tmp, dest)
    finally:
        # gone first, then forgotten: an interrupt in between removes it (again) rather than
        # missing it, and the process may end under this thread at any point
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if on_temporary:
            on_temporary(tmp, False)


def open_append(path: str | Path) -> BinaryIO:
    """``path`` opened for appending, created if absent, never through a symlink (a log a
    run keeps writing must not be redirected into another file)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, "ab")

"""Batch compression on a Ray cluster: the files a single machine writes, from many workers.

Ray (``pip install 'qaft[distributed]'``) is imported only here, only when asked for.  Each
worker is a Ray actor that receives the model folder's files once through Ray's object
store (so remote nodes need qaft installed, not the model), verifies them, opens the graphs
with ONNX Runtime and compresses batches of input paths with the same
:func:`qaft.runtime.codec.encode_file` a local run calls.  Inputs are read by the workers,
so they must be visible at the same path on every node (a shared file system); outputs go
back to the driver as bytes and the driver writes each one, atomically, exactly once.

Faults: Ray restarts a dead actor and the driver hands the batches it held to other workers,
file by file, up to :attr:`ClusterConfig.attempts` tries per file (so a file that kills
workers takes no other file with it); a file that fails that often is reported like any
other failure, and a worker that keeps dying gets no more work.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qaft.runtime.errors import QaftError
from qaft.runtime.model_dir import ModelDir
from qaft.runtime.quantizers import QuantizerParams

#: Seconds joining a running cluster may take: Ray retries an address that accepts TCP but
#: does not answer as Ray (a wrong port, another service) without end.
JOIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how to run: ``address`` None starts a local cluster on this machine."""

    address: str | None = None
    workers: int = 0  # 0: as many as the cluster's CPUs allow at `threads` each
    threads: int = 1  # ONNX Runtime threads per worker
    backend: str = "auto"  # per worker: the best execution provider its node has
    gpus_per_worker: float = 0.0
    precision: str = "fp32"  # of the float graphs; the entropy parameters are exact anyway
    batch: int = 8  # files per task
    attempts: int = 3  # tries per batch before its files are reported failed
    join_timeout: float = JOIN_TIMEOUT  # seconds to join an existing cluster at `address`


class _Worker:
    """One Ray actor: a codec built on first use, then batches of paths -> file bytes.

    The model arrives as a reference to its files' bytes in the object store (the driver's
    verified copy; nothing is read from the worker's disk), resolved on the first batch
    (and again after Ray restarts the actor), not as a constructor argument, which Ray
    could not replay safely on a restart.
    """

    def __init__(self, name: str, backend: str, threads: int, precision: str = "fp32"):
        self.name, self.backend, self.threads = name, backend, threads
        self.precision = precision
        self.codec = None

    def _codec(self, model_ref):
        if self.codec is None:
            import ray

            from qaft.runtime.backends.onnx import onnx_codec
            from qaft.runtime.model_dir import model_dir_from_files

            # Built from the bytes the driver verified and sent, checked again here, with no
            # copy on disk: a folder in a shared temporary directory could have been
            # planted by another user, and one written privately would only be read back.
            files = ray.get(model_ref[0])
            model = model_dir_from_files(files, self.name)
            self.codec = onnx_codec(model, self.backend, self.threads, self.precision)
        return self.codec

    def compress(
        self, model_ref: list, paths: list[str], quantizer: str, delta: float, rdo_lambda: float
    ) -> list[tuple[bool, bytes | str]]:
        from qaft.runtime.codec import encode_file

        codec = self._codec(model_ref)
        params = QuantizerParams(delta, rdo_lambda)
        out: list[tuple[bool, bytes | str]] = []
        for p in paths:
            try:
                out.append((True, encode_file(codec, p, quantizer, params)))
            except QaftError as exc:
                out.append((False, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad file must not fail its batch
                out.append((False, f"{type(exc).__name__}: {exc}"[:300]))
        return out

    def pid(self) -> int:
        return os.getpid()


def _ray():
    try:
        import ray
    except ImportError:
        raise QaftError(
            "--ray needs Ray, which is not installed: pip install 'qaft[distributed]'"
        ) from None
    return ray


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Fails fast on a cluster address nothing answers at (Ray itself retries for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise QaftError(f"--ray {address}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise QaftError(f"cannot start or join Ray at {address}: {exc.strerror or exc}") from None


def _init(ray, address: str | None, timeout: float) -> None:
    """``ray.init``: starting a local cluster (``address`` None or "local") as it takes,
    joining one within ``timeout`` seconds or a one-line error."""
    kwargs = dict(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    where = address or "a local cluster"
    box: dict = {}

    def target() -> None:
        try:
            ray.init(**kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError...
            box["error"] = exc

    if address in (None, "local"):
        target()
    else:
        # Ray's connect loop cannot be interrupted or given a deadline, so it runs on a
        # daemon thread that is abandoned (and dies with the process) if it overruns.
        joiner = threading.Thread(target=target, name="qaft-ray-join", daemon=True)
        joiner.start()
        joiner.join(timeout)
        if joiner.is_alive():
            raise QaftError(
                f"cannot join Ray at {address} within {timeout:g} s "
                "(nothing there answers as a Ray cluster)"
            )
    if "error" in box:
        first = (str(box["error"]).strip().splitlines() or [type(box["error"]).__name__])[0]
        raise QaftError(f"cannot start or join Ray at {where}: {first[:200]}")


def compress_on_ray(
    model: ModelDir,
    items: list[tuple[Path, Path]],
    quantizer: str,
    params: QuantizerParams,
    config: ClusterConfig,
) -> Iterator[tuple[Path, Path, bytes | QaftError]]:
    """Compresses ``items`` ((source, destination) pairs) on the cluster; yields
    (source, destination, file bytes or the error) as batches finish, in any order."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        _probe(config.address)
        # ray.init installs its own SIGTERM handler (exit at once); ours unwinds cleanly
        handler = signal.getsignal(signal.SIGTERM)
        _init(ray, config.address, config.join_timeout)
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGTERM, handler)
    try:
        yield from _run(ray, model, items, quantizer, params, config)
    finally:
        if started:
            ray.shutdown()


#: Seconds a worker may take to be placed and start before the run goes on without it.
READY_TIMEOUT = 120.0
#: A batch whose worker is being restarted waits this long, this many times at most, before
#: the failure counts as one of its tries.
UNAVAILABLE_PAUSE = 1.0
UNAVAILABLE_WAITS = 30


def _start_workers(ray, model: ModelDir, config: ClusterConfig) -> list:
    """Actors that are placed and answering; the others are killed. At least one, or a
    clear error saying what each worker asks of the cluster."""
    res = ray.cluster_resources()
    threads = max(config.threads, 1)
    cpus = res.get("CPU", 1.0)
    n = config.workers or max(1, int(cpus // threads))
    if config.gpus_per_worker > 0:
        n = min(n, max(1, int(res.get("GPU", 0.0) // config.gpus_per_worker)))
    worker = ray.remote(
        num_cpus=min(threads, cpus),
        num_gpus=config.gpus_per_worker,
        max_restarts=-1,  # Ray brings a dead worker back (on another node if its own is gone)
    )(_Worker)
    actors = [
        worker.remote(model.path.name, config.backend, config.threads, config.precision)
        for _ in range(n)
    ]
    pings = {a.pid.remote(): a for a in actors}
    ready, late = ray.wait(list(pings), num_returns=len(pings), timeout=READY_TIMEOUT)
    for ref in late:
        ray.kill(pings[ref])
    if not ready:
        raise QaftError(
            f"no worker could be started on the cluster within {READY_TIMEOUT:.0f} s "
            f"(each asks for {min(threads, cpus):g} CPU and {config.gpus_per_worker:g} GPU; "
            f"the cluster has {cpus:g} CPU and {res.get('GPU', 0.0):g} GPU)"
        )
    return [pings[ref] for ref in ready]


def _run(ray, model, items, quantizer, params, config):
    # the bytes verified when the model was opened: nothing re-read, nothing unlisted sent
    files = ray.put(model.files())
    actors = _start_workers(ray, model, config)
    n = len(actors)
    queue = deque((items[i : i + config.batch], 1) for i in range(0, len(items), config.batch))
    pending: dict = {}
    deaths = [0] * n  # a dead worker fails the two batches it held: counted once per batch
    waits: dict[str, int] = {}  # per batch (its first file): times its worker was restarting

    def load(j: int) -> int:
        return sum(1 for v in pending.values() if v[0] == j)

    def submit(i: int) -> None:
        batch, attempt = queue.popleft()
        paths = [str(src) for src, _ in batch]
        # [files]: a nested reference, which Ray hands over as is for the worker to resolve
        ref = actors[i].compress.remote([files], paths, quantizer, params.delta, params.rdo_lambda)
        pending[ref] = (i, batch, attempt)

    def fill(prefer_not: int | None = None) -> None:
        """Tops every live worker up to two batches, the one that just failed last."""
        order = sorted(range(n), key=lambda j: (j == prefer_not, load(j), j))
        for j in order:
            while queue and deaths[j] <= 2 * config.attempts and load(j) < 2:
                submit(j)

    fill()
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        i, batch, attempt = pending.pop(ref)
        try:
            results = ray.get(ref)
        except ray.exceptions.RayError as exc:
            # A worker being restarted (most often after another batch killed it) is not this
            # batch's fault: on a busy machine a slow restart must not use up its tries, so
            # it goes back as it was, a moment later; a bounded number of times, since the
            # batch that killed the worker can see the same error.
            key = str(batch[0][0])
            restarting = isinstance(exc, ray.exceptions.ActorUnavailableError)
            waits[key] = waits.get(key, 0) + restarting
            if restarting and waits[key] <= UNAVAILABLE_WAITS:
                queue.appendleft((batch, attempt))
                time.sleep(UNAVAILABLE_PAUSE)
            else:
                deaths[i] += 1
                if attempt < config.attempts:
                    # retried file by file, so that one file that kills workers takes no others
                    queue.extendleft(([item], attempt + 1) for item in reversed(batch))
                else:
                    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    for src, dest in batch:
                        yield src, dest, QaftError(f"failed on {attempt} workers ({why})")
            fill(prefer_not=i)
            continue
        for (src, dest), (ok, payload) in zip(batch, results, strict=True):
            yield src, dest, payload if ok else QaftError(payload)
        fill()
    for src, dest in (item for batch, _ in queue for item in batch):
        yield src, dest, QaftError("no worker of the cluster is left to compress it")

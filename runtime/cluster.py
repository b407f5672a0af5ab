"""Batch compression on a Ray cluster: the files a single machine writes, from many workers.

Ray (``pip install 'qaft[distributed]'``) is imported only here, only when asked for.  Each
worker is a Ray actor that receives the model folder's files once through Ray's object
store (so remote nodes need qaft installed, not the model), verifies them, opens the graphs
with ONNX Runtime and compresses batches of input paths with the same
:func:`qaft.runtime.codec.encode_file` a local run calls.  Inputs are read by the workers,
so they must be visible at the same path on every node (a shared file system); outputs go
back to the driver as bytes and the driver writes each one, atomically, exactly once.

Faults: Ray restarts a dead actor (``max_restarts``) and the driver hands the batch it held to
the next worker, up to :attr:`ClusterConfig.attempts` times; a batch that fails that often
is reported file by file, like any other failure.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qaft.runtime.errors import QaftError
from qaft.runtime.model_dir import ModelDir
from qaft.runtime.quantizers import QuantizerParams


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how to run: ``address`` None starts a local cluster on this machine."""

    address: str | None = None
    workers: int = 0  # 0: as many as the cluster's CPUs allow at `threads` each
    threads: int = 1  # ONNX Runtime threads per worker
    backend: str = "auto"  # per worker: the best execution provider its node has
    gpus_per_worker: float = 0.0
    batch: int = 8  # files per task
    attempts: int = 3  # tries per batch before its files are reported failed


class _Worker:
    """One Ray actor: a codec built on first use, then batches of paths -> file bytes.

    The model arrives as a reference to its files in the object store, resolved on the first
    batch (and again after Ray restarts the actor), not as a constructor argument, which Ray
    could not replay safely on a restart.
    """

    def __init__(self, name: str, backend: str, threads: int):
        self.name, self.backend, self.threads = name, backend, threads
        self.codec = None

    def _codec(self, model_ref):
        if self.codec is None:
            import ray

            from qaft.runtime.model_dir import open_model_dir
            from qaft.runtime.onnx_backend import onnx_codec

            folder = Path(tempfile.mkdtemp(prefix="qaft-worker-")) / self.name
            folder.mkdir()
            for fname, data in ray.get(model_ref[0]).items():
                (folder / fname).write_bytes(data)
            self.codec = onnx_codec(open_model_dir(folder), self.backend, self.threads)
        return self.codec

    def compress(
        self, model_ref: list, paths: list[str], quantizer: str, step: float, lmbda: float
    ) -> list[tuple[bool, bytes | str]]:
        from qaft.runtime.codec import encode_file

        codec = self._codec(model_ref)
        params = QuantizerParams(step, lmbda)
        out: list[tuple[bool, bytes | str]] = []
        for p in paths:
            try:
                out.append((True, encode_file(codec, p, quantizer, params)))
            except QaftError as exc:
                out.append((False, str(exc)))
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
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise QaftError(f"--ray {address}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise QaftError(f"cannot start or join Ray at {address}: {exc.strerror or exc}") from None


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
        try:
            ray.init(
                address=config.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            where = config.address or "a local cluster"
            raise QaftError(f"cannot start or join Ray at {where}: {exc}") from None
    try:
        yield from _run(ray, model, items, quantizer, params, config)
    finally:
        if started:
            ray.shutdown()


def _run(ray, model, items, quantizer, params, config):
    cpus = ray.cluster_resources().get("CPU", 1.0)
    threads = max(config.threads, 1)
    n = config.workers or max(1, int(cpus // threads))
    files = ray.put({f.name: f.read_bytes() for f in sorted(model.path.iterdir()) if f.is_file()})
    worker = ray.remote(
        num_cpus=min(threads, cpus),
        num_gpus=config.gpus_per_worker,
        max_restarts=config.attempts,
    )(_Worker)
    actors = [worker.remote(model.path.name, config.backend, config.threads) for _ in range(n)]
    queue = deque((items[i : i + config.batch], 1) for i in range(0, len(items), config.batch))
    pending: dict = {}
    failures = {i: 0 for i in range(n)}  # per worker; past `attempts` it gets no more work

    def submit(i: int) -> None:
        batch, attempt = queue.popleft()
        paths = [str(src) for src, _ in batch]
        # [files]: a nested reference, which Ray hands over as is for the worker to resolve
        ref = actors[i].compress.remote([files], paths, quantizer, params.step, params.lmbda)
        pending[ref] = (i, batch, attempt)

    for _ in range(2):  # two batches per worker: one running, one waiting
        for i in range(n):
            if queue:
                submit(i)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        i, batch, attempt = pending.pop(ref)
        try:
            results = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            failures[i] += 1
            if attempt < config.attempts:
                queue.appendleft((batch, attempt + 1))
            else:
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                for src, dest in batch:
                    yield src, dest, QaftError(f"failed on {attempt} workers ({why})")
            # the retry goes to another worker; this one (restarted by Ray) gets new work too
            live = [j for j in range(n) if failures[j] <= config.attempts]
            for j in sorted(live, key=lambda j: (j == i, (j - i) % n)):
                if queue and sum(1 for v in pending.values() if v[0] == j) < 2:
                    submit(j)
            continue
        for (src, dest), (ok, payload) in zip(batch, results):
            yield src, dest, payload if ok else QaftError(payload)
        if queue:
            submit(i)
    for src, dest in (item for batch, _ in queue for item in batch):
        yield src, dest, QaftError("no worker of the cluster is left to compress it")

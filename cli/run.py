"""``qaft-run``: the PyTorch-free runtime (ONNX Runtime, NumPy, constriction)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from qaft.cli import outputs
from qaft.cli.common import (
    fail_cleanly,
    model_quantizer,
    named,
    print_models,
    quantizer_option,
    quantizer_options,
)
from qaft.runtime.errors import QaftError


def _backend_options(fn):
    fn = click.option(
        "--precision",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
        help="Precision of the float graphs (the entropy parameters are exact either way: "
        "a file written at one precision decodes at the other); bf16: --backend openvino, "
        "on a CPU with bf16; auto: bf16 there, fp32 elsewhere (docs/performance.md).",
    )(fn)
    fn = click.option(
        "--threads",
        default=0,
        show_default=True,
        callback=_check_threads,
        help="ONNX Runtime intra-op (OpenVINO: inference) threads (0: its default; at most "
        "4 per core).",
    )(fn)
    fn = click.option(
        "--backend",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "cpu", "cuda", "tensorrt", "openvino"]),
        help="ONNX Runtime's execution provider, or OpenVINO on the CPU (auto: the first "
        "available of tensorrt, cuda, openvino, cpu).",
    )(fn)
    return fn


def _check_threads(ctx, param, value: int) -> int:
    from qaft.runtime.limits import check_threads

    try:
        return check_threads(value)
    except QaftError as exc:
        raise click.BadParameter(str(exc)) from None


def _report_options(fn):
    fn = click.option("-q", "--quiet", is_flag=True, help="Print errors only.")(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")(
        fn
    )


#: Images in flight hold their arrays at once; more than this gains nothing on any machine.
MAX_JOBS = 64


def _jobs_option(fn):
    return click.option(
        "--jobs",
        default=1,
        show_default=True,
        type=click.IntRange(1, MAX_JOBS),
        help="Images in flight at once (networks and entropy coding overlap).",
    )(fn)


def _open_model(model: str):
    """A model folder path or a bundled model name -> verified ModelDir."""
    from qaft.runtime.api import open_model

    return open_model(model)


def _check_encoder(model_dir, precision: str = "auto") -> None:
    """A model must have its analysis graph to encode (see the API's check_encoder)."""
    from qaft.runtime.api import check_encoder

    check_encoder(model_dir, precision)


def _quantizer(model_dir, asked: str | None) -> str:
    """The quantizer to code with this model (its own unless another is asked for)."""
    return model_quantizer(model_dir.path.name, model_dir.model.meta.finetuned_for, asked)


def _codec(model_dir, backend: str, threads: int, precision: str = "auto", quiet: bool = False):
    from qaft.runtime.backends.onnx import onnx_codec

    codec = onnx_codec(model_dir, backend, threads, precision)
    if not quiet:
        click.echo(
            f"model {model_dir.path.name} ({model_dir.model.fingerprint.hex()}), backend "
            f"{codec.networks.backend}, {codec.networks.precision}, threads {threads or 'default'}",
            err=True,
        )
    return codec


def _inputs(paths: tuple[str, ...], suffixes: tuple[str, ...], recursive: bool, bad=None):
    """(file, path relative to its root) for files and folders given on the command line.

    A path that exists but is neither a regular file nor a folder (a FIFO, a device) is
    appended to ``bad`` as (path, why), a failure of that input alone; without ``bad`` it
    is an error like a missing path."""
    out = []
    for p in map(Path, paths):
        if bad is not None and p.exists() and not (p.is_dir() or p.is_file()):
            bad.append((p, "not a regular file"))
            continue
        if p.is_dir() and not recursive and any(d.is_dir() for d in p.iterdir()):
            click.echo(f"note: sub-folders of {p} are skipped (--recursive descends)", err=True)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out += [
                (f, f.relative_to(p))
                for f in sorted(it)
                if f.is_file() and f.suffix.lower() in suffixes
            ]
        elif p.is_file():
            out.append((p, Path(p.name)))
        else:
            raise QaftError(f"{p}: no such file or folder")
    if not out and not bad:
        raise QaftError(f"nothing to do: no {'/'.join(suffixes)} files in {', '.join(paths)}")
    return out


def _ordered_map(fn, items: list, jobs: int):
    """``map(fn, items)`` in order, with up to ``jobs`` items in flight on threads (ONNX
    Runtime, NumPy and constriction release the GIL in their kernels)."""
    if jobs <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # on Ctrl-C, drop what has not started instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qaft", prog_name="qaft-run")
def main() -> None:
    """Compress and decompress images with exported qaft models (no PyTorch needed)."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def models(as_json) -> None:
    """List the bundled models."""
    from qaft.runtime.zoo import EXPORTED, list_models

    print_models(list_models(), as_json, EXPORTED.install)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--recursive", is_flag=True, help="Descend into sub-folders.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object a file.")
@fail_cleanly(threaded=True)
def info(paths, recursive, as_json) -> None:
    """Show what .qaft files' headers say (files or folders)."""
    from qaft.runtime.api import info as stream_info
    from qaft.runtime.container import read_stream
    from qaft.runtime.quantizers import QUANTIZERS

    bad: list = []
    files = _inputs(paths, (".qaft",), recursive, bad)
    rows, failed = [], list(bad)
    for src, _ in files:
        try:
            data = read_stream(src)
            rows.append({"file": str(src), **_named(str(src), stream_info, data)})
        except QaftError as exc:
            failed.append((src, str(exc)))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    for r in [] if as_json else rows:
        # an unknown quantizer id shows its step too: nothing says it has none
        uses_delta = getattr(QUANTIZERS.get(r["quantizer"]), "uses_delta", True)
        step = f" step {r['step']:g}" if uses_delta else ""
        click.echo(
            outputs.printable(
                f"{r['file']}: {r['width']}x{r['height']}, {r['bytes']:,} bytes, "
                f"{r['bpp']:.3f} bpp, {r['quantizer']}{step}, model "
                f"{r['bundled_model'] or r['model_fingerprint'] + ' (not bundled)'}"
            )
        )
    for src, why in failed:
        named = why if why.startswith(f"{src}: ") else f"{src}: {why}"
        click.echo(outputs.printable(f"error: {named}"), err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--model", default=None, help="Bundled model name or model folder (default q3).", callback=named
)
@click.option(
    "--quality",
    type=click.IntRange(0, 6),
    help="The zoo's rate 0..6 (`qaft-run models`: Kodak bpp and PSNR of each); with "
    "--quantizer, its model finetuned for that quantizer where there is one.",
)
@click.option(
    "--target-bpp",
    type=click.FloatRange(0, min_open=True),
    help="Per image, the model and step that code it at about this many bits per pixel (±5%).",
)
@click.option(
    "--target-psnr",
    type=click.FloatRange(0, min_open=True),
    help="Per image, the smallest file whose PSNR reaches this many dB.",
)
@click.option(
    "-o",
    "--out",
    required=True,
    help="Output folder; or, for one input, the output file (by its suffix), - for stdout.",
)
@quantizer_options
@click.option("--recursive", is_flag=True, help="Descend into sub-folders (paths kept).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@_jobs_option
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Spread the files over a Ray cluster: --ray (or --ray local) starts one here, "
    "--ray ADDRESS joins one. Put it after the paths, or give it a value.",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 1024),
    help="With --ray: workers (0: the cluster's CPUs / --threads).",
)
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 8),
    help="With --ray: GPUs each worker takes.",
)
@_report_options
@_backend_options
@fail_cleanly(threaded=lambda kwargs: not kwargs.get("ray_address"))
def compress(
    paths,
    model,
    quality,
    target_bpp,
    target_psnr,
    out,
    quantizer,
    step,
    q_lmbda,
    recursive,
    force,
    jobs,
    ray_address,
    workers,
    gpus_per_worker,
    backend,
    threads,
    precision,
    as_json,
    quiet,
):
    """Compress images (files or folders) to .qaft files; one file to a named file, or
    standard input (-) to standard output (-o -)."""
    from qaft.runtime.image import IMAGE_SUFFIXES, has_alpha, load_rgb

    single = _single(paths, out, (".qaft",), as_json)
    bad: list = []
    files = [] if single else _inputs(paths, IMAGE_SUFFIXES, recursive, bad)
    if ray_address and (target_bpp or target_psnr):
        raise QaftError("--target-bpp and --target-psnr do not run on a cluster (--ray)")
    if ray_address and single:
        raise QaftError("--ray spreads folders over a cluster; one file is coded here (drop --ray)")
    enc = _encoder(
        model, quality, target_bpp, target_psnr, quantizer, step, q_lmbda,
        backend, threads, precision, quiet or as_json,
    )  # fmt: skip
    if single:
        src, dest = single
        job = outputs.Job(Path(src), Path(dest))
        if not _needs_writing(job, force, lambda: enc.state(job)):
            return
        image = load_rgb(*_read_input(src, None)) if src == "-" else load_rgb(src)
        data, info = enc.encode(image)
        _deliver(job, data, force, stamp=src != "-")
        _said(_got(src, dest, data, info), job, data, as_json, quiet, info)
        return
    planned, clashes = outputs.plan(files, Path(out), ".qaft", [f for f, _ in files])
    todo, fresh, failed = outputs.sort_jobs(planned, enc.state, force)
    failed = bad + clashes + failed
    infos: dict[Path, dict] = {}

    def work(job):
        try:
            data, infos[job.dest] = enc.encode(load_rgb(job.src))
            if has_alpha(job.src):
                infos[job.dest]["alpha_dropped"] = True
            if enc.target and not (quiet or as_json):
                click.echo(
                    outputs.printable(_got(job.src, job.dest, data, infos[job.dest])), err=True
                )
            return job, data
        except QaftError as exc:
            return job, exc

    if ray_address:
        from qaft.runtime.tools.cluster import ClusterConfig, compress_on_ray

        address = None if ray_address == "local" else ray_address
        config = ClusterConfig(address, workers, threads or 1, backend, gpus_per_worker, precision)
        md = enc.model_dir
        click.echo(
            f"model {md.path.name} ({md.model.fingerprint.hex()}), "
            f"Ray cluster {address or '(local)'}",
            err=True,
        )
        by_pair = {(j.src, j.dest): j for j in todo}
        results = (
            (by_pair[(src, dest)], res)
            for src, dest, res in compress_on_ray(
                md, list(by_pair), enc.quantizer, enc.params, config
            )
        )
    else:
        results = _ordered_map(work, todo, jobs)
    written, left = _write_results(
        results, len(todo), force, failed, "compress", stamp=True, infos=infos
    )
    alpha = sum(1 for r in written if r.get("alpha_dropped"))
    if alpha and not (quiet or as_json):
        click.echo(f"note: {alpha} of the images had an alpha channel; it is dropped", err=True)
    _summary("compressed", written, fresh, failed, left, as_json, quiet)


@dataclass
class _Encoder:
    """How compress codes an image: ``encode(image) -> (bytes, what it chose)``, and what
    makes an existing output up to date (``state``)."""

    encode: Callable[[np.ndarray], tuple[bytes, dict]]
    state: Callable[[outputs.Job], outputs.State]
    target: bool = False
    model_dir: object = None  # a fixed model's folder (for --ray)
    quantizer: str = ""
    params: object = None


def _encoder(
    model, quality, target_bpp, target_psnr, quantizer, step, q_lmbda,
    backend, threads, precision, quiet,
) -> _Encoder:  # fmt: skip
    """The encoder that the options ask for: one model (by name, folder or ``--quality``),
    or per image the model and setting that meet ``--target-bpp``/``--target-psnr``."""
    from qaft.runtime import codec as C
    from qaft.runtime.api import FLAGS, TARGET_QUANTIZER, choose_model, coding_setting
    from qaft.runtime.quantizers import QUANTIZERS

    spec = choose_model(model, quality, target_bpp, target_psnr, quantizer, step, q_lmbda, FLAGS)
    if spec is None:
        from qaft.runtime.rate_control import encode_to_target, zoo_candidates

        candidates = zoo_candidates(
            quantizer or TARGET_QUANTIZER, backend=backend, threads=threads, precision=precision
        )

        def encode(image):
            r = encode_to_target(image, candidates, target_bpp=target_bpp, target_psnr=target_psnr)
            return r.data, {
                "model": r.model, "quantizer": r.quantizer, "step": r.params.delta,
                "psnr": r.psnr, "met": r.met, "out_of_range": r.out_of_range,
            }  # fmt: skip

        by_fp = {c.codec.model.fingerprint: c for c in candidates}

        def state(job):
            # The target is not in the file: an earlier output is up to date if it is a
            # whole stream of a candidate, stamped with its input's time, of its size, and
            # it meets the target as the search would (its bpp, or its decoded PSNR).
            now = _stream_state(job, b"", None, None)
            if now is not outputs.State.UP_TO_DATE:
                return now
            return outputs.State.UP_TO_DATE if _meets(job, by_fp) else outputs.State.STALE

        def _meets(job, by_fp) -> bool:
            from qaft.runtime import container
            from qaft.runtime.image import load_rgb
            from qaft.runtime.metrics import psnr
            from qaft.runtime.rate_control import BPP_TOLERANCE, PSNR_TOLERANCE_DB

            if str(job.src) == "-":  # standard input has no time to compare with
                return False
            data = container.read_stream(job.dest)
            h = container.unpack(data)[0]
            cand = by_fp.get(h.fingerprint)
            if cand is None or QUANTIZERS[cand.quantizer].id != h.quantizer_id:
                return False
            if os.stat(job.dest).st_mtime_ns != os.stat(job.src).st_mtime_ns:
                return False
            if target_bpp is not None:
                return abs(8 * len(data) / (h.width * h.height) / target_bpp - 1) <= BPP_TOLERANCE
            got = psnr(C.decode(cand.codec, data).image, load_rgb(job.src))
            return target_psnr <= got <= target_psnr + PSNR_TOLERANCE_DB

        return _Encoder(encode, state, target=True)
    model_dir = _open_model(spec)
    setting = coding_setting(model_dir, quantizer, step, q_lmbda, precision, FLAGS)
    for line in setting.warnings:
        click.echo(line, err=True)
    quantizer, params = setting.quantizer, setting.params
    quant = QUANTIZERS[quantizer]
    about = {"model": model_dir.path.name, "quantizer": quantizer}
    opened: list = []  # the sessions, made at the first image (none when all is up to date)
    lock = threading.Lock()

    def encode(image):
        with lock:
            if not opened:
                opened.append(_codec(model_dir, backend, threads, precision, quiet))
        return C.encode(opened[0], image, quantizer, params).data, dict(about)

    def state(job):
        return _stream_state(job, model_dir.model.fingerprint, quant, params)

    return _Encoder(encode, state, False, model_dir, quantizer, params)


def _got(src, dest, data: bytes, info: dict) -> str:
    """One line on what an image got: its size, and what a target search chose."""
    from qaft.runtime import container

    h = container.unpack(data)[0]
    line = f"{src} -> {dest}: {len(data):,} bytes, {8 * len(data) / (h.width * h.height):.3f} bpp"
    line += f", {info['model']} {info['quantizer']}"
    if "psnr" in info:
        line += f" step {info['step']:.3g}, {info['psnr']:.2f} dB"
        if info["out_of_range"]:
            line += f" (the target is {info['out_of_range']} the zoo's range: nearest end)"
        elif not info["met"]:
            line += " (target not met within the trials allowed)"
    return line


def _stream_state(job: outputs.Job, fingerprint: bytes, quant, params) -> outputs.State:
    """What is at a compress output: up to date only if it is a whole .qaft file of this
    model, quantizer and step, of the input's size, bearing the input's modification time
    (which compress gives each file it writes, as rsync does: an input replaced by another,
    even an older one, makes its output stale)."""
    from qaft.runtime import container
    from qaft.runtime.codec import header_delta
    from qaft.runtime.image import upright_size

    if _foreign(job.dest):
        return outputs.State.FOREIGN
    if not outputs.exists(job.dest):
        return outputs.State.ABSENT
    try:
        header = container.unpack(container.read_stream(job.dest))[0]
    except container.ContainerError:  # a damaged stream of ours
        return outputs.State.STALE
    if quant is None:  # nothing to compare with: a whole stream of ours
        return outputs.State.UP_TO_DATE
    try:
        size = upright_size(job.src)
    except QaftError:
        size = None
    same = (
        header.fingerprint == fingerprint
        and header.quantizer_id == quant.id
        and header.step == header_delta(quant, params)
        and (header.height, header.width) == size
        and os.stat(job.dest).st_mtime_ns == os.stat(job.src).st_mtime_ns
    )
    return outputs.State.UP_TO_DATE if same else outputs.State.STALE


def _image_state(job: outputs.Job, digest: str) -> outputs.State:
    """What is at a decompress output: ours (a PNG naming its stream) or not, and if ours,
    decoded from this very stream or not."""
    from qaft.runtime.image import png_source

    kind = _regular(job.dest)
    if kind is not outputs.State.STALE:
        return kind
    source = png_source(job.dest)  # read once: whether it is ours, and whether it is current
    if source is None:
        return outputs.State.FOREIGN
    return outputs.State.UP_TO_DATE if source == digest else outputs.State.STALE


def _single(paths: tuple[str, ...], out: str, suffixes: tuple[str, ...], as_json: bool = False):
    """(input, output) when the command codes one file into one named file or a pipe:
    one input that is a file or ``-`` (standard input), and an output ``-`` (standard
    output) or with one of ``suffixes`` that is not a folder.  None for folder mode."""
    one = len(paths) == 1 and (paths[0] == "-" or Path(paths[0]).is_file())
    to_file = out == "-" or (Path(out).suffix.lower() in suffixes and not Path(out).is_dir())
    if out == "-" and as_json:
        raise QaftError("--json and -o - would both write to standard output")
    if one and to_file:
        return paths[0], out
    suffix = Path(out).suffix.lower()
    if one and suffix and not Path(out).is_dir():
        raise QaftError(f"-o {out}: this command writes {suffixes[0]} files (or give a folder)")
    if out != "-" and outputs.exists(Path(out)) and not Path(out).is_dir():
        # a device (/dev/null) or another file is no folder to write into
        need = f"a {suffixes[0]} file, a folder or -" if one else "a folder for a folder's files"
        raise QaftError(f"-o {out}: not a folder (name {need})")
    if "-" in paths:
        raise QaftError(f"reading standard input (-) needs -o FILE{suffixes[0]} or -o -")
    if out == "-":
        raise QaftError("-o - (standard output) takes one input file")
    return None


def _read_input(src: str, check) -> tuple:
    """Standard input's bytes, bounded like a file's; as (file object, name) for an image
    reader, or checked by ``check`` (a stream reader) first."""
    import io

    from qaft.runtime.container import MAX_STREAM_BYTES

    data = sys.stdin.buffer.read(MAX_STREAM_BYTES + 1)
    if len(data) > MAX_STREAM_BYTES:
        raise QaftError(f"standard input: over the {MAX_STREAM_BYTES:,}-byte limit")
    if not data:
        raise QaftError("standard input: empty")
    return (data, "-") if check else (io.BytesIO(data), "standard input")


def _named(src: str, fn, *args):
    """``fn(*args)``, its one-line errors prefixed with the input they are about."""
    try:
        return fn(*args)
    except QaftError as exc:
        raise QaftError(f"{'standard input' if src == '-' else src}: {exc}") from None


def _said(
    line: str, job: outputs.Job, data: bytes, as_json: bool, quiet: bool, info: dict | None = None
) -> None:
    """What a one-file run reports: a line on stderr, or its record as JSON on stdout."""
    if as_json:
        click.echo(json.dumps({**_record(job, data), **(info or {})}, indent=2))
    elif not quiet:
        click.echo(outputs.printable(line), err=True)


def _needs_writing(job: outputs.Job, force: bool, state) -> bool:
    """Whether one named output is to be written: an absent file, or with ``--force``
    whatever regular file is there (it was named); False if it is up to date (said so).
    Anything else is refused before any work."""
    if str(job.dest) == "-":
        return True
    if state() is outputs.State.UP_TO_DATE and not force:
        click.echo(f"{job.dest} is up to date (--force writes it again)", err=True)
        return False
    outputs.check_new_file(job.dest, force, [job.src])  # the user named it: --force may replace
    return True


def _deliver(job: outputs.Job, data: bytes, force: bool, stamp: bool = False) -> None:
    """Writes one named output, or standard output for ``-``."""
    if str(job.dest) == "-":
        if sys.stdout is None:
            raise QaftError("-o -: standard output is closed")
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:  # a full disk or a closed pipe behind the redirection
            raise QaftError(f"-o -: cannot write standard output ({exc.strerror or exc})") from None
        return
    outputs.write(job.dest, data, replace=force)
    if stamp:
        _stamp(job)


def _foreign(path: Path) -> bool:
    """Whether something that qaft-run did not write is at ``path``: anything but a .qaft
    stream (by its magic number) or a PNG that names the stream it was decoded from."""
    from qaft.runtime.container import MAGIC
    from qaft.runtime.image import png_source

    kind = _regular(path)
    if kind is not outputs.State.STALE:
        return kind is outputs.State.FOREIGN
    if path.suffix.lower() == ".png":
        return png_source(path) is None
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) != MAGIC


def _regular(path: Path) -> outputs.State:
    """ABSENT; FOREIGN for anything but a regular file (a folder, a symlink or a FIFO is
    never opened); STALE meaning "a regular file, to be looked into"."""
    if not outputs.exists(path):
        return outputs.State.ABSENT
    return outputs.State.STALE if outputs.is_regular(path) else outputs.State.FOREIGN


def _stamp(job: outputs.Job) -> None:
    """Gives an output its input's modification time (what marks it up to date)."""
    st = os.stat(job.src)
    os.utime(job.dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _write_results(
    results,
    total: int,
    force: bool,
    failed: list,
    desc: str,
    stamp: bool = False,
    infos: dict | None = None,
) -> tuple[list[dict], int]:
    """Writes each (job, bytes) as it arrives; a (job, QaftError) and a failed write are
    that file's failure, and a full disk stops the batch.  With ``stamp`` each output gets
    its input's modification time.  Returns (a record of each file written, the number
    not attempted)."""
    from tqdm import tqdm

    written, seen = [], 0
    for job, result in tqdm(results, total=total, disable=not sys.stderr.isatty(), desc=desc):
        seen += 1
        if isinstance(result, QaftError):
            failed.append((job.src, str(result)))
            continue
        try:
            outputs.write(job.dest, result, replace=force)
            if stamp:
                _stamp(job)
        except OSError as exc:
            failed.append((job.src, outputs.write_error(exc, job.dest)))
            if exc.errno in outputs.FATAL_WRITE_ERRORS:
                break
            continue
        written.append({**_record(job, result), **(infos or {}).get(job.dest, {})})
    return written, total - seen


def _record(job: outputs.Job, data: bytes) -> dict:
    """What a script learns of one file written: paths, sizes, and a stream's bpp."""
    from qaft.runtime import container

    rec = {"input": str(job.src), "output": str(job.dest), "bytes": len(data)}
    rec["input_bytes"] = os.stat(job.src).st_size if str(job.src) != "-" else None
    if data[: len(container.MAGIC)] == container.MAGIC:
        h = container.unpack(data)[0]
        rec |= {"width": h.width, "height": h.height, "bpp": 8 * len(data) / (h.width * h.height)}
    return rec


def _summary(
    verb: str, written: list[dict], fresh: int, failed: list, left: int, as_json: bool, quiet: bool
) -> None:
    """The closing line (or a JSON object), then one ``error:`` line per failed input
    (control characters in names escaped, so a name cannot forge a line); exit status 1 if
    anything failed or was left undone (``left``: files not attempted after the disk
    filled).  ``quiet`` keeps only the errors."""
    n_in = sum(r["input_bytes"] or 0 for r in written)
    n_out = sum(r["bytes"] for r in written)
    bpps = [r["bpp"] for r in written if "bpp" in r]
    if as_json:
        errors = [{"input": str(src), "error": why} for src, why in failed]
        totals = {"bytes_in": n_in, "bytes_out": n_out}
        if bpps:
            totals["mean_bpp"] = sum(bpps) / len(bpps)
        report = {"written": written, "skipped_up_to_date": fresh, "failed": errors}
        click.echo(json.dumps({**report, "not_attempted": left, **totals}, indent=2))
    elif not quiet:
        undone = f", not attempted {left} (nothing more could be written)" if left else ""
        sizes = ""
        if written:
            sizes = f": {n_in:,} bytes in, {n_out:,} out"
            if bpps and n_out:
                sizes += f" ({n_in / n_out:.1f}x smaller), mean {sum(bpps) / len(bpps):.3f} bpp"
        click.echo(
            f"{verb} {len(written)}, skipped {fresh} up to date, failed {len(failed)}{undone}"
            + sizes
        )
    for src, why in failed:
        named = why if why.startswith(f"{src}: ") else f"{src}: {why}"  # the file once
        click.echo(outputs.printable(f"error: {named}"), err=True)
    if failed or left:
        sys.exit(1)


#: Decoders kept open at once when files of several bundled models are decoded together.
MAX_OPEN_MODELS = 4


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    required=True,
    help="Output folder; or, for one input, the output file (by its suffix), - for stdout.",
)
@click.option(
    "--model",
    callback=named,
    default=None,
    help="Model name or folder (default: the bundled model that wrote each file).",
)
@click.option("--recursive", is_flag=True)
@click.option(
    "--force", is_flag=True, help="Replace stale outputs (never a file qaft-run did not write)."
)
@_jobs_option
@_report_options
@_backend_options
@fail_cleanly(threaded=True)
def decompress(
    paths, out, model, recursive, force, jobs, as_json, quiet, backend, threads, precision
):
    """Decompress .qaft files to PNG; one file to a named file, or standard input (-) to
    standard output (-o -)."""
    import hashlib
    import threading
    from collections import OrderedDict

    from qaft.runtime import codec as C
    from qaft.runtime.api import not_bundled
    from qaft.runtime.container import read_stream
    from qaft.runtime.image import save_png_bytes
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import find_by_fingerprint

    single = _single(paths, out, (".png",), as_json)
    if single:
        src, dest = single
        job = outputs.Job(Path(src), Path(dest))
        data = read_stream(src) if src != "-" else _read_input(src, read_stream)[0]
        digest = hashlib.sha256(data).hexdigest()
        header = _named(src, C.read_header, data)
        if model:
            codec = _codec(_open_model(model), backend, threads, precision, quiet or as_json)
        else:
            path = find_by_fingerprint(header.fingerprint)
            if path is None:
                raise QaftError(f"{src}: {not_bundled(header.fingerprint, '--model')}")
            codec = _codec(open_model_dir(path), backend, threads, precision, quiet or as_json)
        if not _needs_writing(job, force, lambda: _image_state(job, digest)):
            return
        png = save_png_bytes(_named(src, C.decode, codec, data).image, digest)
        _deliver(job, png, force)
        msg = f"decompressed {src} -> {dest}: {header.width}x{header.height}"
        _said(msg, job, png, as_json, quiet)
        return
    bad: list = []
    files = _inputs(paths, (".qaft",), recursive, bad)
    planned, clashes = outputs.plan(files, Path(out), ".png", [f for f, _ in files])

    def state(job):
        try:
            digest = hashlib.sha256(read_stream(job.src)).hexdigest()
        except QaftError:
            return outputs.State.ABSENT  # unreadable: its own error comes when it is decoded
        return _image_state(job, digest)

    todo, fresh, failed = outputs.sort_jobs(planned, state, force)
    failed = bad + clashes + failed
    quiet = quiet or as_json
    fixed = _codec(_open_model(model), backend, threads, precision, quiet) if model else None
    codecs: OrderedDict[bytes, object] = OrderedDict()
    lock = threading.Lock()  # each model's sessions are created once, by one thread

    def codec_for(fp: bytes):
        if fixed is not None:
            return fixed  # a file of another model is refused by the fingerprint check
        with lock:
            if fp not in codecs:
                path = find_by_fingerprint(fp)
                if path is None:
                    raise not_bundled(fp, "--model")
                codecs[fp] = _codec(open_model_dir(path), backend, threads, precision, quiet)
                while len(codecs) > MAX_OPEN_MODELS:
                    codecs.popitem(last=False)
            codecs.move_to_end(fp)
            return codecs[fp]

    def work(job):
        try:
            data = read_stream(job.src)
            img = C.decode(codec_for(C.read_header(data).fingerprint), data).image
            return job, save_png_bytes(img, hashlib.sha256(data).hexdigest())
        except QaftError as exc:
            return job, exc

    results = _ordered_map(work, todo, jobs)
    written, left = _write_results(results, len(todo), force, failed, "decompress")
    _summary("decompressed", written, fresh, failed, left, as_json, quiet)


#: What `demo` wrote in its --out folder (file name -> SHA-256): it replaces those files
#: while they are unchanged, and nothing else.
DEMO_RECORD = ".qaft-demo.json"


def _digest(data_or_path) -> str | None:
    """SHA-256 of bytes, or of a regular file's contents (None for anything else)."""
    import hashlib
    import stat

    if isinstance(data_or_path, bytes):
        return hashlib.sha256(data_or_path).hexdigest()
    if not stat.S_ISREG(os.lstat(data_or_path).st_mode):
        return None
    h = hashlib.sha256()
    with open(data_or_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _demo_record(out_dir: Path) -> dict[str, str]:
    """The files an earlier demo wrote into ``out_dir``; a record that is not one (a user's
    file of that name, a symlink) stops the demo rather than be replaced."""
    path = out_dir / DEMO_RECORD
    if not outputs.exists(path):
        return {}
    try:
        if _digest(path) is None:
            raise ValueError
        record = json.loads(path.read_text())
        if not (isinstance(record, dict) and all(isinstance(v, str) for v in record.values())):
            raise ValueError
    except (OSError, ValueError, RecursionError):
        raise QaftError(f"{path} is not a record of qaft-run demo: use another --out") from None
    return record


@main.command()
@click.option(
    "--data",
    "--images",
    "images",
    type=click.Path(file_okay=False),
    help="Folder to compress (default: $QAFT_DATA if set).",
)
@click.option("--model", default=None, help="Bundled model name or model folder.", callback=named)
@quantizer_option
@click.option(
    "--out",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder (not the images' own); the demo's earlier files there are replaced.",
)
@_backend_options
@fail_cleanly(threaded=True)
def demo(images, model, quantizer, out, backend, threads, precision) -> None:
    """Compress a folder to .qaft files, decode the files back to PNG, print a table."""
    import hashlib

    from qaft.runtime import codec as C
    from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb, save_png_bytes
    from qaft.runtime.metrics import psnr
    from qaft.runtime.tools.rate_distortion import default_images
    from qaft.runtime.zoo import DEFAULT_MODEL

    images = images or default_images()
    if images is None:
        raise QaftError(
            "no images given: pass --data FOLDER (or IMAGES=FOLDER to make, or set QAFT_DATA)"
        )
    out_dir = Path(out)
    if out_dir.is_dir() and Path(images).is_dir() and os.path.samefile(out_dir, images):
        raise QaftError(f"--out {out} is the images' own folder: choose another one")
    files = _inputs((images,), IMAGE_SUFFIXES, False)
    inputs = [f for f, _ in files]
    streams, clashes = outputs.plan(files, out_dir, ".qaft", inputs)
    pngs, _ = outputs.plan(files, out_dir, ".png", inputs)
    if clashes:
        raise QaftError(clashes[0][1])
    record = _demo_record(out_dir)
    for job in streams + pngs:  # its own earlier files, unchanged since, and nobody else's
        digest = _digest(job.dest) if outputs.exists(job.dest) else None
        if outputs.exists(job.dest) and (digest is None or record.get(job.dest.name) != digest):
            raise QaftError(
                f"{job.dest} exists and was not written by qaft-run demo: use another --out"
            )
    model_dir = _open_model(model or DEFAULT_MODEL)
    _check_encoder(model_dir, precision)
    quantizer = _quantizer(model_dir, quantizer)
    codec = _codec(model_dir, backend, threads, precision)
    click.echo(f"{len(files)} images -> {out_dir}/ ({quantizer})")
    click.echo(
        f"{'image':<22}{'size':>11}{'bytes':>9}{'bpp':>8}{'PSNR dB':>9}{'enc ms':>8}{'dec ms':>8}"
    )
    rows = []
    for (src, _), sjob, pjob in zip(files, streams, pngs):
        img = load_rgb(src)
        t0 = time.perf_counter()
        data = C.encode(codec, img, quantizer).data
        outputs.write(sjob.dest, data, replace=True)
        t1 = time.perf_counter()
        dec = C.decode(codec, data)
        png = save_png_bytes(dec.image, hashlib.sha256(data).hexdigest())
        outputs.write(pjob.dest, png, replace=True)
        t2 = time.perf_counter()
        record |= {sjob.dest.name: _digest(data), pjob.dest.name: _digest(png)}
        outputs.write(out_dir / DEMO_RECORD, json.dumps(record, indent=1).encode(), replace=True)
        h, w = img.shape[:2]
        row = (8 * len(data) / (h * w), psnr(img, dec.image), (t1 - t0) * 1e3, (t2 - t1) * 1e3)
        rows.append(row)
        click.echo(
            f"{src.name:<22}{f'{w}x{h}':>11}{len(data):>9}{row[0]:>8.3f}{row[1]:>9.2f}"
            f"{row[2]:>8.0f}{row[3]:>8.0f}"
        )
    mean = [sum(r[i] for r in rows) / len(rows) for i in range(4)]
    click.echo(f"{'mean':<22}{'':>20}{mean[0]:>8.3f}{mean[1]:>9.2f}{mean[2]:>8.0f}{mean[3]:>8.0f}")


@main.command()
@click.option("--model", required=True, help="Model to time (name or folder).", callback=named)
@click.option("--baseline", help="Model to compare with (name or folder).", callback=named)
@click.option(
    "--data",
    "--images",
    "images",
    type=click.Path(file_okay=False),
    help="Images (default: $QAFT_DATA if set, else synthetic 768x512).",
)
@click.option(
    "--max-images",
    "count",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Images used.",
)
@click.option(
    "--repeat",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Runs per image and model.",
)
@quantizer_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write figures here.")
@_backend_options
@fail_cleanly(threaded=True)
def bench(model, baseline, images, count, repeat, quantizer, json_out, backend, threads, precision):
    """Per-stage latency medians of a model, and its ratio to a baseline."""
    from qaft.runtime.tools.bench import bench as run_bench
    from qaft.runtime.tools.bench import graph_stats, load_images
    from qaft.runtime.tools.rate_distortion import default_images

    images = images or default_images()
    imgs = load_images(Path(images) if images else None, count)
    if not imgs:
        raise QaftError(f"no images to time in {images}")
    dirs = {"model": _open_model(model)}
    if baseline:
        dirs["baseline"] = _open_model(baseline)
    codecs = {k: _codec(d, backend, threads, precision) for k, d in dirs.items()}
    quantizer = _quantizer(dirs["model"], quantizer)  # the baseline is timed with the same
    med = run_bench(codecs, imgs, quantizer, repeat)
    stats = {k: graph_stats(d) for k, d in dirs.items()}
    keys = list(med["model"])
    click.echo(f"{len(imgs)} images x {repeat} runs, quantizer {quantizer}; medians in ms")
    head = f"{'stage':<28}{'model':>10}"
    if baseline:
        head += f"{'baseline':>10}{'ratio':>8}"
    click.echo(head)
    for k in keys:
        line = f"{k:<28}{med['model'][k] * 1e3:>10.1f}"
        if baseline:
            b = med["baseline"][k]
            line += f"{b * 1e3:>10.1f}{med['model'][k] / b:>8.3f}"
        click.echo(line)
    for k, st in stats.items():
        for g, s in st.items():
            n_ops = sum(s["operators"].values())
            click.echo(f"{k} {g}: {n_ops} operators, {s['parameters']:,} parameters")
    result = {
        "quantizer": quantizer,
        "images": len(imgs),
        "repeat": repeat,
        "backend": codecs["model"].networks.backend,
        "precision": codecs["model"].networks.precision,
        "threads": threads,
        "medians_s": med,
        "graphs": stats,
        "models": {k: str(d.path) for k, d in dirs.items()},
    }
    if baseline:
        result["ratio"] = med["model"]["encode+decode"] / med["baseline"]["encode+decode"]
        result["identical_graphs"] = bool(stats["model"]) and all(
            stats["model"][g]["operators"] == stats["baseline"][g]["operators"]
            and stats["model"][g]["parameters"] == stats["baseline"][g]["parameters"]
            for g in stats["model"]
        )
        click.echo(
            f"ratio (encode+decode): {result['ratio']:.3f}; identical operators and "
            f"parameter counts: {result['identical_graphs']}"
        )
    if json_out:
        ours = lambda obj: isinstance(obj, dict) and "medians_s" in obj  # noqa: E731
        inputs = list(Path(images).iterdir()) if images else []
        outputs.write_json(Path(json_out), json.dumps(result, indent=2), inputs, ours)


@main.command("eval")
@click.option(
    "--model",
    "models",
    callback=named,
    multiple=True,
    required=True,
    help="Model name or folder (repeatable: one point each).",
)
@click.option("--data", type=click.Path(file_okay=False), help="Images (default: $QAFT_DATA).")
@quantizer_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Results JSON.")
@click.option("--name", default="qaft-run", show_default=True, help="Curve name in the JSON.")
@_backend_options
@fail_cleanly(threaded=True)
def eval_cmd(models, data, quantizer, step, q_lmbda, json_out, name, backend, threads, precision):
    """Rate-distortion on a folder with real files, in CompressAI's JSON layout (MS-SSIM is
    left null here: it needs the PyTorch side's `qaft eval`)."""
    from qaft.runtime.image import IMAGE_SUFFIXES
    from qaft.runtime.tools.rate_distortion import (
        curve_point,
        default_images,
        evaluate_codec,
        is_results,
        results_text,
    )

    folder = data or default_images()
    if folder is None:
        raise QaftError("no images: pass --data FOLDER (or set QAFT_DATA)")
    images = [f for f, _ in _inputs((folder,), IMAGE_SUFFIXES, False)]
    points = []
    for m in models:
        md = _open_model(m)
        codec = _codec(md, backend, threads, precision)
        q = _quantizer(md, quantizer)
        params = codec.model.params(q, step, q_lmbda)
        res = evaluate_codec(codec, images, q, params, progress=sys.stderr.isatty())
        about = {k: getattr(md.model.meta, k) for k in ("lmbda", "stage", "finetuned_for")}
        points.append(curve_point(res, {"label": m, **about}, q, params))
        s = points[-1]["summary"]
        click.echo(
            f"{m:>24}  {s['bpp']:.4f} bpp  {s['psnr']:.3f} dB  enc "
            f"{s['encoding_time'] * 1e3:.0f} ms  dec {s['decoding_time'] * 1e3:.0f} ms"
        )
    if json_out:
        used = ", ".join(sorted({p["model"]["quantizer"] for p in points}))
        desc = f"qaft-run {used} on {len(images)} images of {folder}, real files"
        text = results_text(name, desc, points)
        outputs.write_json(Path(json_out), text, images, is_results)
        click.echo(f"wrote {json_out}")

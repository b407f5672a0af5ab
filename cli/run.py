"""``qaft-run``: the PyTorch-free runtime (ONNX Runtime, NumPy, constriction)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from qaft.cli.common import fail_cleanly, print_models, quantizer_options
from qaft.runtime.errors import QaftError

QUANTIZER_CHOICE = click.Choice(["sq", "rdoq", "tcq", "tcq8"])


def _backend_options(fn):
    fn = click.option(
        "--precision",
        default="fp32",
        show_default=True,
        type=click.Choice(["fp32", "fp16"]),
        help="Precision of the float graphs (the entropy parameters are exact either way: "
        "a file written at one precision decodes at the other).",
    )(fn)
    fn = click.option(
        "--threads",
        default=0,
        show_default=True,
        help="ONNX Runtime intra-op threads (0: its default).",
    )(fn)
    fn = click.option(
        "--backend",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
        help="Execution provider (auto: the best available).",
    )(fn)
    return fn


def _jobs_option(fn):
    return click.option(
        "--jobs",
        default=1,
        show_default=True,
        help="Images in flight at once (networks and entropy coding overlap).",
    )(fn)


def _open_model(model: str):
    """A model folder path or a bundled model name -> verified ModelDir."""
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import model_path

    path = Path(model)
    if path.is_dir() or os.sep in model:
        return open_model_dir(path)
    return open_model_dir(model_path(model))


def _codec(model_dir, backend: str, threads: int, precision: str = "fp32"):
    from qaft.runtime.onnx_backend import onnx_codec

    codec = onnx_codec(model_dir, backend, threads, precision)
    click.echo(
        f"model {model_dir.path.name} ({model_dir.fingerprint.hex()}), backend "
        f"{codec.networks.backend}, {precision}, threads {threads or 'default'}",
        err=True,
    )
    return codec


def _inputs(paths: tuple[str, ...], suffixes: tuple[str, ...], recursive: bool):
    """(file, path relative to its root) for files and folders given on the command line."""
    out = []
    for p in map(Path, paths):
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
    if not out:
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Temporary file, then rename: an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Compress and decompress images with exported qaft models (no PyTorch needed)."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def models(as_json) -> None:
    """List the bundled models."""
    from qaft.runtime.zoo import list_models

    print_models(list_models(), as_json)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@fail_cleanly
def info(file) -> None:
    """Show what a .qaft file's header says."""
    from qaft.runtime.codec import read_header
    from qaft.runtime.quantizers import QUANTIZER_NAMES
    from qaft.runtime.zoo import find_by_fingerprint

    data = Path(file).read_bytes()
    h = read_header(data)
    model = find_by_fingerprint(h.fingerprint)
    click.echo(
        json.dumps(
            {
                "file": str(file),
                "bytes": len(data),
                "format_version": h.version,
                "width": h.width,
                "height": h.height,
                "bpp": 8 * len(data) / (h.width * h.height),
                "quantizer": QUANTIZER_NAMES.get(h.quantizer_id, f"unknown ({h.quantizer_id})"),
                "step": h.step,
                "model_fingerprint": h.fingerprint.hex(),
                "bundled_model": model.name if model else None,
            },
            indent=2,
        )
    )


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", default=None, help="Bundled model name or model folder (default q3).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
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
    help="With --ray: workers (0: the cluster's CPUs / --threads).",
)
@click.option(
    "--gpus-per-worker", default=0.0, show_default=True, help="With --ray: GPUs each worker takes."
)
@_backend_options
@fail_cleanly
def compress(
    paths,
    model,
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
):
    """Compress images (files or folders) to .qaft files."""
    from tqdm import tqdm

    from qaft.runtime import codec as C
    from qaft.runtime.image import IMAGE_SUFFIXES
    from qaft.runtime.zoo import DEFAULT_MODEL

    files = _inputs(paths, IMAGE_SUFFIXES, recursive)
    model_dir = _open_model(model or DEFAULT_MODEL)
    codec = None if ray_address else _codec(model_dir, backend, threads, precision)
    params = C.resolve_params(model_dir.quantizer_defaults, quantizer, step, q_lmbda)
    out_dir, failed, skipped = Path(out), [], 0
    claimed: set[Path] = set()
    todo = []
    for src, rel in files:
        dest = out_dir / rel.with_suffix(".qaft")
        if dest in claimed:  # photo.png and photo.jpg side by side
            failed.append((src, f"another input also maps to {dest}; rename one of them"))
        elif dest.exists() and not force:
            skipped += 1
        else:
            todo.append((src, dest))
        claimed.add(dest)

    def work(item):
        src, dest = item
        try:
            return src, dest, C.encode_file(codec, src, quantizer, params)
        except QaftError as exc:
            return src, dest, exc

    if ray_address:
        from qaft.runtime.cluster import ClusterConfig, compress_on_ray

        address = None if ray_address == "local" else ray_address
        config = ClusterConfig(address, workers, threads or 1, backend, gpus_per_worker, precision)
        click.echo(
            f"model {model_dir.path.name} ({model_dir.fingerprint.hex()}), "
            f"Ray cluster {address or '(local)'}",
            err=True,
        )
        results = compress_on_ray(model_dir, todo, quantizer, params, config)
    else:
        results = _ordered_map(work, todo, jobs)
    done = 0
    for src, dest, result in tqdm(
        results,
        total=len(todo),
        disable=not sys.stderr.isatty(),
        desc="compress",
    ):
        if isinstance(result, QaftError):
            failed.append((src, str(result)))
            continue
        _write_atomic(dest, result)
        done += 1
    click.echo(
        f"compressed {done}, skipped {skipped} existing (--force overwrites), failed {len(failed)}"
    )
    for src, why in failed:
        click.echo(f"error: {src}: {why}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--model",
    default=None,
    help="Model name or folder (default: the bundled model that wrote each file).",
)
@click.option("--recursive", is_flag=True)
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@_jobs_option
@_backend_options
@fail_cleanly
def decompress(paths, out, model, recursive, force, jobs, backend, threads, precision):
    """Decompress .qaft files to PNG."""
    import threading

    from qaft.runtime import codec as C
    from qaft.runtime.image import save_png_bytes
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import find_by_fingerprint

    files = _inputs(paths, (".qaft",), recursive)
    codecs: dict[bytes, object] = {}
    lock = threading.Lock()  # each model's sessions are created once, by one thread

    def codec_for(fp: bytes):
        with lock:
            if fp not in codecs:
                if model:
                    md = _open_model(model)
                else:
                    path = find_by_fingerprint(fp)
                    if path is None:
                        raise QaftError(
                            f"written by model {fp.hex()}, which is not bundled: pass --model"
                        )
                    md = open_model_dir(path)
                codecs[fp] = _codec(md, backend, threads, precision)
            return codecs[fp]

    out_dir, failed, done, skipped = Path(out), [], 0, 0
    todo = []
    for src, rel in files:
        dest = out_dir / rel.with_suffix(".png")
        if dest.exists() and not force:
            skipped += 1
        else:
            todo.append((src, dest))

    def work(item):
        src, dest = item
        try:
            data = src.read_bytes()
            img = C.decode(codec_for(C.read_header(data).fingerprint), data).image
            return src, dest, save_png_bytes(img)
        except QaftError as exc:
            return src, dest, exc
        except OSError as exc:
            return src, dest, QaftError(f"cannot read it ({exc.strerror or exc})")

    for src, dest, result in _ordered_map(work, todo, jobs):
        if isinstance(result, QaftError):
            failed.append((src, str(result)))
            continue
        _write_atomic(dest, result)
        done += 1
    click.echo(f"decompressed {done}, skipped {skipped} existing, failed {len(failed)}")
    for src, why in failed:
        click.echo(f"error: {src}: {why}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Folder to compress (default: ../shared/data/kodak if present).",
)
@click.option("--model", default=None, help="Bundled model name or model folder.")
@click.option("--quantizer", type=QUANTIZER_CHOICE, default="sq", show_default=True)
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@_backend_options
@fail_cleanly
def demo(images, model, quantizer, out, backend, threads, precision) -> None:
    """Compress a folder to .qaft files, decode the files back to PNG, print a table."""
    from qaft.runtime import codec as C
    from qaft.runtime.evaluation import default_kodak
    from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb, save_png_bytes
    from qaft.runtime.metrics import psnr
    from qaft.runtime.zoo import DEFAULT_MODEL

    images = images or default_kodak()
    if images is None:
        raise QaftError("no images given: pass --images FOLDER (or IMAGES=FOLDER to make)")
    files = _inputs((images,), IMAGE_SUFFIXES, False)
    codec = _codec(_open_model(model or DEFAULT_MODEL), backend, threads)
    out_dir = Path(out)
    click.echo(f"{len(files)} images -> {out_dir}/ ({quantizer})")
    click.echo(
        f"{'image':<22}{'size':>11}{'bytes':>9}{'bpp':>8}{'PSNR dB':>9}{'enc ms':>8}{'dec ms':>8}"
    )
    rows = []
    for src, rel in files:
        img = load_rgb(src)
        t0 = time.perf_counter()
        data = C.encode(codec, img, quantizer).data
        _write_atomic(out_dir / rel.with_suffix(".qaft"), data)
        t1 = time.perf_counter()
        dec = C.decode(codec, (out_dir / rel.with_suffix(".qaft")).read_bytes())
        _write_atomic(out_dir / rel.with_suffix(".png"), save_png_bytes(dec.image))
        t2 = time.perf_counter()
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
@click.option("--model", required=True, help="Model to time (name or folder).")
@click.option("--baseline", help="Model to compare with (name or folder).")
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Images (default: Kodak if present, else synthetic 768x512).",
)
@click.option("--count", default=4, show_default=True, help="Images used.")
@click.option("--repeat", default=3, show_default=True, help="Runs per image and model.")
@click.option("--quantizer", type=QUANTIZER_CHOICE, default="sq", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write figures here.")
@_backend_options
@fail_cleanly
def bench(model, baseline, images, count, repeat, quantizer, json_out, backend, threads, precision):
    """Per-stage latency medians of a model, and its ratio to a baseline."""
    from qaft.runtime.bench import bench as run_bench
    from qaft.runtime.bench import graph_stats, load_images
    from qaft.runtime.evaluation import default_kodak

    images = images or default_kodak()
    imgs = load_images(Path(images) if images else None, count)
    dirs = {"model": _open_model(model)}
    if baseline:
        dirs["baseline"] = _open_model(baseline)
    codecs = {k: _codec(d, backend, threads, precision) for k, d in dirs.items()}
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
        Path(json_out).write_text(json.dumps(result, indent=2))


@main.command("eval")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model name or folder (repeatable: one point each).",
)
@click.option("--data", type=click.Path(file_okay=False), help="Images (default: Kodak).")
@quantizer_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Results JSON.")
@click.option("--name", default="qaft-run", show_default=True, help="Curve name in the JSON.")
@_backend_options
@fail_cleanly
def eval_cmd(models, data, quantizer, step, q_lmbda, json_out, name, backend, threads, precision):
    """Rate-distortion on a folder with real files, in CompressAI's JSON layout (MS-SSIM is
    left null here: it needs the PyTorch side's `qaft eval`)."""
    from qaft.runtime.evaluation import curve_point, default_kodak, evaluate_codec, write_results
    from qaft.runtime.image import IMAGE_SUFFIXES

    folder = data or default_kodak()
    if folder is None:
        raise QaftError("no images: pass --data FOLDER")
    images = [f for f, _ in _inputs((folder,), IMAGE_SUFFIXES, False)]
    points = []
    for m in models:
        md = _open_model(m)
        codec = _codec(md, backend, threads, precision)
        params = codec.params(quantizer, step, q_lmbda)
        res = evaluate_codec(codec, images, quantizer, params, progress=sys.stderr.isatty())
        about = {k: md.manifest.get(k) for k in ("lmbda", "stage", "finetuned_for")}
        points.append(curve_point(res, {"label": m, **about}, quantizer, params))
        s = points[-1]["summary"]
        click.echo(
            f"{m:>24}  {s['bpp']:.4f} bpp  {s['psnr']:.3f} dB  enc "
            f"{s['encoding_time'] * 1e3:.0f} ms  dec {s['decoding_time'] * 1e3:.0f} ms"
        )
    if json_out:
        desc = f"qaft-run {quantizer} on {len(images)} images of {folder}, real files"
        write_results(json_out, name, desc, points)
        click.echo(f"wrote {json_out}")

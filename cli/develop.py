"""``qaft``: training, evaluation, import and analysis (PyTorch side)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from qaft.cli import outputs
from qaft.cli.common import (
    fail_cleanly,
    model_quantizer,
    named,
    print_models,
    quantizer_choice,
    quantizer_options,
)
from qaft.runtime.errors import ConfigError


def _resume_option(fixed: str):
    """``--resume [RUN]``: alone, the run in ``--out``; with a value, that run."""
    return click.option(
        "--resume",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[RUN]",
        help="Continue the run RUN (or the one in --out) from its last checkpoint, with its "
        f"settings (options given change its schedule; {fixed}).",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qaft", prog_name="qaft")
def main() -> None:
    """Train, finetune, evaluate and export qaft image codecs."""


@main.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    help="Folder of training images (required, except with --resume).",
)
@click.option(
    "--lmbda",
    type=float,
    help="Rate-distortion trade-off λ (MSE on 0-255; required, except with --resume).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (a new one).")
@click.option("--N", "N", default=128, show_default=True, help="Channels of the transforms.")
@click.option("--M", "M", default=192, show_default=True, help="Channels of the latent y.")
@click.option(
    "--architecture",
    # qaft.training.models.ARCHITECTURES (not imported here: --help must not load torch)
    type=click.Choice(["mean-scale-hyperprior", "scale-hyperprior", "factorized-prior"]),
    default="mean-scale-hyperprior",
    show_default=True,
    help="Hyperprior with predicted means (Minnen 2018), with scales only, or no "
    "hyperprior, one density per channel (Ballé 2018).",
)
@click.option(
    "--stand-in",
    type=click.Choice(["noise", "ste", "mixed"]),
    default="mixed",
    show_default=True,
    help="Differentiable stand-in for quantization.",
)
@click.option("--steps", default=100_000, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--crop", default=128, show_default=True)
@click.option("--lr", default=1e-4, show_default=True)
@click.option(
    "--lr-decay-at",
    default="0.8,0.95",
    show_default=True,
    help="Fractions of --steps (or of --time-budget) where the learning rate drops 10x.",
)
@click.option(
    "--time-budget",
    default=0.0,
    show_default=True,
    help="Seconds of training: the run ends when they are spent and the learning-rate "
    "drops follow elapsed time (0: --steps decides).",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "none"]),
    default="auto",
    show_default=True,
    help="Run the networks under bf16 autocast (entropy models stay fp32); auto: where the "
    "hardware computes bf16 natively (AMX, CUDA), not where it would be emulated.",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=True,
    show_default=True,
    help="Weights and batches in channels-last layout (faster convolutions).",
)
@click.option(
    "--compile",
    is_flag=True,
    help="torch.compile the forward pass (faster steps after about a minute of compiling).",
)
@click.option("--init-from", type=click.Path(dir_okay=False), help="Warm start from a model file.")
@click.option(
    "--widen",
    is_flag=True,
    help="--init-from a narrower model (smaller N/M): start from it, new channels at zero.",
)
@click.option(
    "--val-data",
    type=click.Path(file_okay=False),
    help="Validation images, coded to real files (default: $QAFT_DATA if set).",
)
@click.option(
    "--val-every", default=2000, show_default=True, help="Steps between validations (0: never)."
)
@click.option("--val-images", default=6, show_default=True, help="Validation images used (0: all).")
@click.option("--threads", default=0, help="Torch threads (0: default).")
@click.option("--log-every", default=50, show_default=True, help="Steps between log lines.")
@click.option("--ckpt-every", default=250, show_default=True, help="Steps between checkpoints.")
@_resume_option(
    "its architecture, λ, stand-in and seed cannot change",
)
@click.pass_context
@fail_cleanly
def train(ctx: click.Context, resume: str | None, lr_decay_at: str, **kw) -> None:
    """Stage 1: train a hyperprior codec end to end."""

    from qaft.training.evaluate import default_images, make_validator
    from qaft.training.train import TrainConfig, resume_config
    from qaft.training.train import train as run_training

    kw["lr_decay_at"] = tuple(float(v) for v in lr_decay_at.split(",") if v)
    kw["out"], resume = _run_folder(kw["out"], resume)
    if resume:
        cfg = resume_config(kw["out"], _named_on_command_line(ctx, kw))
    else:
        _require(kw, ("data", "lmbda"))
        if kw["val_data"] is None:
            kw["val_data"] = default_images()
        cfg = TrainConfig(**kw)
    validator = (
        make_validator(cfg.val_data, cfg.val_images) if cfg.val_data and cfg.val_every else None
    )
    final = run_training(cfg, resume=resume, validate=validator, progress=sys.stderr.isatty())
    click.echo(f"wrote {final}")


def _named_on_command_line(ctx: click.Context, kw: dict) -> dict:
    """The options the command line names: a resumed run takes everything else from itself."""
    from click.core import ParameterSource

    return {
        k: v for k, v in kw.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE
    }


def _require(kw: dict, names: tuple[str, ...]) -> None:
    """A new run needs these options (a resumed one has them)."""
    missing = [f"--{k}" for k in names if kw[k] is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise click.UsageError(f"{' and '.join(missing)} {verb} required (except with --resume)")


def _run_folder(out: str | None, resume: str | None) -> tuple[str, bool]:
    """(run folder, resuming?) from ``--out`` and ``--resume [RUN]``."""
    if resume:  # --resume RUN
        if out and Path(out).resolve() != Path(resume).resolve():
            raise click.UsageError(f"--resume {resume} and --out {out} name two runs")
        return resume, True
    if not out:
        raise click.UsageError("give --out RUN (a new run) or --resume RUN")
    return out, resume is not None


def _model_file(spec: str) -> Path:
    """A model file by path, or a bundled model's file by name (``--ckpt q3`` works as
    ``--model q3`` does)."""
    from qaft.training.zoo import resolve

    path = resolve(spec)
    if path.is_dir():
        hint = (
            "a run folder: `qaft snapshot --run DIR --out model.pt` writes its model file"
            if (path / "last.pt").exists()
            else "a folder, not a model file"
        )
        raise click.ClickException(f"{spec}: {hint}")
    return path


def _load_codec(model: str | None, ckpt: str | None, device: str = "cpu"):
    """A PyTorch-backed codec for a zoo name or a model file, and a label for it."""
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model
    from qaft.training.zoo import model_path

    path = model_path(model) if model else _model_file(ckpt)
    loaded = load_model(path, device)
    return codec_from_loaded(loaded, device), loaded, (model or str(ckpt))


def _images_or_fail(data: str | None):
    from qaft.training.data import list_images
    from qaft.training.evaluate import default_images

    folder = data or default_images()
    if folder is None:
        raise FileNotFoundError("no images given: pass --data FOLDER (or set QAFT_DATA)")
    return list_images(folder)


@main.command("eval")
@click.option(
    "--model", "models", multiple=True, help="Bundled model name (repeatable).", callback=named
)
@click.option(
    "--ckpt",
    "ckpts",
    callback=named,
    multiple=True,
    help="Model file, or a bundled model's name (repeatable).",
)
@click.option(
    "--data", type=click.Path(file_okay=False), help="Images (default: Kodak if present)."
)
@quantizer_options
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write results JSON here."
)
@click.option("--name", default="qaft", show_default=True, help="Curve name in the JSON.")
@click.option("--max-images", default=0, help="Only the first N images (0: all).")
@click.option(
    "--update",
    is_flag=True,
    help="Replace these models' points in the existing --json file (matched by label), "
    "keeping its other points, name and description.",
)
@fail_cleanly
def eval_cmd(
    models, ckpts, data, quantizer, step, q_lmbda, json_out, name, max_images, update
) -> None:
    """Rate-distortion of models on a folder, coding real files (one point per model)."""
    from qaft.runtime.tools.rate_distortion import (
        curve_point,
        is_results,
        read_points,
        results_text,
    )
    from qaft.training.evaluate import evaluate_codec

    if not models and not ckpts:
        raise click.UsageError("give at least one --model or --ckpt")
    kept, desc = [], None
    if update:
        if not json_out or not Path(json_out).is_file():
            raise click.UsageError("--update needs an existing --json file")
        kept = read_points(json_out)  # first: it checks the layout
        blob = json.loads(Path(json_out).read_text())
        name, desc = blob.get("name", name), blob.get("description")
    images = _images_or_fail(data)
    if max_images:
        images = images[:max_images]
    points = []
    for m, c in [(m, None) for m in models] + [(None, c) for c in ckpts]:
        codec, loaded, label = _load_codec(m, c)
        q = model_quantizer(label, loaded.meta.finetuned_for, quantizer)
        params = codec.model.params(q, step, q_lmbda)
        res = evaluate_codec(codec, images, q, params, progress=sys.stderr.isatty())
        about = {k: getattr(loaded.meta, k) for k in ("lmbda", "stage", "finetuned_for", "steps")}
        points.append(curve_point(res, {"label": label, **about}, q, params))
        s = points[-1]["summary"]
        click.echo(
            f"{label:>24}  {s['bpp']:.4f} bpp  {s['psnr']:.3f} dB  "
            f"MS-SSIM {s['ms_ssim']:.4f}  enc {s['encoding_time'] * 1e3:.0f} ms  "
            f"dec {s['decoding_time'] * 1e3:.0f} ms"
        )
    if json_out:
        desc = desc or (
            f"qaft {', '.join(sorted({p['model']['quantizer'] for p in points}))} on "
            f"{len(images)} images of {Path(images[0]).parent}, real files"
        )
        labels = {p["model"].get("label") for p in points}
        points += [p for p in kept if p["model"].get("label") not in labels]
        text = results_text(name, desc, points)
        outputs.write_json(Path(json_out), text, images, is_results)
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("anchor", type=click.Path(exists=True, dir_okay=False))
@click.argument("test", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--anchor-models",
    help="Only these points of ANCHOR, by model name (comma-separated; qaft's results files).",
)
@click.option(
    "--per-point",
    is_flag=True,
    help="Also each TEST point's rate against ANCHOR's curve at the same PSNR.",
)
@click.option(
    "--sensitivity",
    type=click.FloatRange(0, 100, min_open=True, max_open=True),
    help="Also the BD-rate if each TEST point alone saved this many percent of its rate.",
)
@fail_cleanly
def bdrate(anchor, test, as_json, anchor_models, per_point, sensitivity) -> None:
    """BD-rate of TEST against ANCHOR (results JSON files; negative: TEST is better)."""
    import json

    from qaft.training.bdrate import bd_rate, bd_sensitivity, load_curve, rate_differences

    only = [m.strip() for m in anchor_models.split(",")] if anchor_models else None
    a, t = load_curve(anchor, only), load_curve(test)
    # a single point (a run being tried) has no BD-rate, only its distance to the curve
    too_few = per_point and len(t["bpp"]) < 4
    if sensitivity and len(t["bpp"]) < 4:
        from qaft.runtime.errors import QaftError

        raise QaftError(f"--sensitivity needs a curve of four or more points, not {test}")
    out = {"anchor": a["name"], "test": t["name"], "bd_rate": None if too_few else bd_rate(a, t)}
    if "ms-ssim" in a and "ms-ssim" in t and not too_few:
        out["bd_rate_ms_ssim"] = bd_rate(a, t, "ms-ssim")
    if per_point:
        out["per_point"] = rate_differences(a, t)
    if sensitivity:
        labels = t.get("labels") or [f"point {i + 1}" for i in range(len(t["bpp"]))]
        moved = bd_sensitivity(a, t, sensitivity)
        out["sensitivity"] = {"percent": sensitivity, "bd_rate": dict(zip(labels, moved))}
    if as_json:
        click.echo(json.dumps(out))
        return
    if out["bd_rate"] is None:
        click.echo(f"{t['name']} against {a['name']} (too few points for a BD-rate):")
    else:
        bd = out["bd_rate"]
        click.echo(f"BD-rate of {t['name']} against {a['name']}: {bd:+.2f}% (PSNR-RGB)")
    if "bd_rate_ms_ssim" in out:
        click.echo(f"{'':>{len('BD-rate')}} {out['bd_rate_ms_ssim']:+.2f}% (MS-SSIM)")
    for i, p in enumerate(out.get("per_point", [])):
        diff = "outside the anchor's range"
        if p["rate_difference"] is not None:
            diff = f"{p['rate_difference']:+.1f}% (anchor {p['anchor_bpp']:.4f} bpp)"
        name = p["model"] or f"point {i + 1}"
        click.echo(f"  {name}: {p['bpp']:.4f} bpp, {p['psnr-rgb']:.3f} dB: {diff}")
    if "sensitivity" in out:
        click.echo(f"BD-rate if one point alone saved {sensitivity:g}% of its rate:")
        for name, bd in out["sensitivity"]["bd_rate"].items():
            moved_by = "no curve (below the point beneath it)"
            if bd is not None:
                moved_by = f"{bd:+.2f}% ({bd - out['bd_rate']:+.2f})"
            click.echo(f"  {name}: {moved_by}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def models(as_json) -> None:
    """List the bundled models."""
    from qaft.training.zoo import CHECKPOINTS, list_models

    print_models(list_models(), as_json, CHECKPOINTS.install)


@main.command()
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder of `qaft train`.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def snapshot(run_dir, out, force) -> None:
    """Write a model file from a run's latest checkpoint (the run may still be going)."""
    from qaft.training.run import RUN_FILES
    from qaft.training.train import snapshot as take

    outputs.check_new_file(Path(out), force, [Path(run_dir) / f for f in RUN_FILES])
    click.echo(f"wrote {take(run_dir, out)}")


@main.command("import-compressai")
@click.argument("ckpt", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="qaft model file.")
@click.option("--lmbda", type=float, help="λ the model was trained for (recorded only).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def import_compressai_cmd(ckpt, out, lmbda, force) -> None:
    """Convert a CompressAI MeanScaleHyperprior, ScaleHyperprior or FactorizedPrior checkpoint
    into a qaft model file."""
    from qaft.training.compressai_import import import_compressai

    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"{ckpt}: no such file")
    outputs.check_new_file(Path(out), force, [Path(ckpt)])
    click.echo(f"wrote {import_compressai(ckpt, out, lmbda)}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--title", default="Kodak", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def plot(files, out, title, force) -> None:
    """Plot PSNR against bpp for results JSON files."""
    from qaft.training.plot import plot_rd

    for f in files:  # a FIFO would block the reader
        if not Path(f).is_file():
            raise click.ClickException(f"{f}: not a regular file")
    outputs.check_new_file(Path(out), force, [Path(f) for f in files])
    click.echo(f"wrote {plot_rd(list(files), out, title)}")


@main.command("tune-quantizer")
@click.option("--model", help="Bundled model name.", callback=named)
@click.option("--ckpt", help="Model file, or a bundled model's name.", callback=named)
@click.option(
    "--quantizer",
    "quantizers",
    multiple=True,
    required=True,
    type=quantizer_choice(tunable=True),
    help="Quantizer(s) to tune.",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(file_okay=False),
    help="Tuning images (training images, not the test set).",
)
@click.option("--max-images", "n_images", default=4, show_default=True, help="Images used.")
@click.option("--crop", default=512, show_default=True, help="Centre crop of each image.")
@click.option("--write", is_flag=True, help="Store the best settings in the model file.")
@fail_cleanly
def tune_quantizer(model, ckpt, quantizers, data, n_images, crop, write) -> None:
    """Measure a model's quantizer step and search λ (minimum λ·255²·MSE + bpp)."""
    from qaft.runtime.model import quantizers_to_dict
    from qaft.training.checkpoint import update_meta
    from qaft.training.data import list_images
    from qaft.training.tune import tune
    from qaft.training.zoo import model_path

    if bool(model) == bool(ckpt):
        raise click.UsageError("give exactly one of --model and --ckpt")
    path = model_path(model) if model else _model_file(ckpt)
    codec, loaded, label = _load_codec(None, str(path))
    lmbda = loaded.meta.lmbda
    if not lmbda:
        raise ConfigError(f"{label}: the model file records no training λ")
    images = list_images(data)[:n_images]
    gain = loaded.meta.synthesis_gain
    if gain is None:
        from qaft.runtime.image import load_rgb
        from qaft.training.tune import center_crop, synthesis_gain

        gain = synthesis_gain(codec, [center_crop(load_rgb(p), 256) for p in images[:2]])
        gain = [float(g) for g in gain]
        # the search weighs the channels by the gain just measured
        codec.model.meta = replace(codec.model.meta, synthesis_gain=gain)
        click.echo(f"{label}: synthesis gain per channel {min(gain):.0f} … {max(gain):.0f}")
    found = {}
    for q in quantizers:
        best = tune(codec, lmbda, q, images, crop)["best"]
        found[q] = {"step": best["step"], "lmbda": best["lmbda"]}
        click.echo(
            f"{label} {q}: step {best['step']} λ {best['lmbda']}  "
            f"({best['bpp']:.4f} bpp, MSE {best['mse']:.2f}, J {best['J']:.4f})"
        )
    if write:
        update_meta(
            path,
            {
                "synthesis_gain": gain,
                "quantizers": {**quantizers_to_dict(loaded.meta.quantizers), **found},
            },
        )
        click.echo(f"stored in {path}")


@main.command()
@click.option("--model", help="Bundled model name.", callback=named)
@click.option("--ckpt", help="Model file, or a bundled model's name.", callback=named)
@click.option(
    "--data",
    required=True,
    type=click.Path(file_okay=False),
    help="Calibration images (training images, not the test set).",
)
@click.option(
    "--max-images", "n_images", default=0, show_default=True, help="Images used (0: all)."
)
@click.option("--write", is_flag=True, help="Store the fitted densities in the model file.")
@click.option("--reset", is_flag=True, help="Remove a model file's calibration (plain Gaussians).")
@fail_cleanly
def calibrate(model, ckpt, data, n_images, write, reset) -> None:
    """Fit the residual density of each scale level on training images (smaller files,
    same reconstruction)."""
    from qaft.training.calibrate import fit_model, store
    from qaft.training.data import list_images
    from qaft.training.zoo import model_path

    if bool(model) == bool(ckpt):
        raise click.UsageError("give exactly one of --model and --ckpt")
    path = model_path(model) if model else _model_file(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if reset:
        store(path, None, {})
        click.echo(f"{path}: calibration removed")
        return
    images = list_images(data)
    images = images[:n_images] if n_images else images
    rep = fit_model(path, images)
    click.echo(
        f"{path}: y code length on {rep.images} images ({rep.symbols} latents) "
        f"{rep.bits_before / 8e3:.1f} kB -> {rep.bits_after / 8e3:.1f} kB "
        f"({100 * rep.change:+.2f}%)"
    )
    if write:
        note = {"images": rep.images, "data": Path(data).name, "y_change": round(rep.change, 5)}
        # nothing fitted (too few latents per level): the plain Gaussians, fingerprint kept
        store(path, None if rep.calibration.is_identity() else rep.calibration, note)
        click.echo(f"stored in {path}")


@main.command()
@click.option(
    "--ckpt",
    help="Stage-1 model file, or a bundled model's name (required, except with --resume).",
    callback=named,
)
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    help="Training images (required, except with --resume).",
)
@click.option(
    "--quantizer",
    type=quantizer_choice(),
    default="sq",
    show_default=True,
    help="The quantizer the model is finetuned for.",
)
@click.option(
    "--parts", default="decoder", show_default=True, help="'decoder' or 'decoder,hyper-decoder'."
)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (a new one).")
@click.option("--steps", default=2000, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--crop", default=128, show_default=True)
@click.option("--lr", default=2e-5, show_default=True)
@click.option("--step", type=float, help="Quantizer step Δ (default: the model's).")
@click.option("--q-lmbda", type=float, help="λ of the quantizer search (default: the model's).")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--threads", default=0, help="Torch threads (0: default).")
@click.option("--log-every", default=50, show_default=True)
@click.option("--ckpt-every", default=250, show_default=True)
@_resume_option("its parent model, quantizer, parts and seed cannot change")
@click.pass_context
@fail_cleanly
def finetune(ctx: click.Context, resume, parts, **kw) -> None:
    """Stage 2: retrain the decoder side on the real quantizer's latents (QAFT)."""

    from qaft.training.finetune import FinetuneConfig, resume_config
    from qaft.training.finetune import finetune as run

    kw["out"], resume = _run_folder(kw["out"], resume)
    kw["parts"] = tuple(p.strip() for p in parts.split(",") if p.strip())
    if kw["ckpt"] is not None:
        kw["ckpt"] = str(_model_file(kw["ckpt"]))
    if resume:
        cfg = resume_config(kw["out"], _named_on_command_line(ctx, kw))
    else:
        _require(kw, ("ckpt", "data"))
        cfg = FinetuneConfig(**kw)
    click.echo(f"wrote {run(cfg, resume=resume, progress=sys.stderr.isatty())}")


@main.command()
@click.option(
    "--ckpt", required=True, help="Model file, or a bundled model's name.", callback=named
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model folder.")
@click.option(
    "--check-image",
    type=click.Path(dir_okay=False),
    help="A real image to check the graphs on (besides random inputs).",
)
@click.option(
    "--tensorrt",
    is_flag=True,
    help="Also build TensorRT engines (needs the tensorrt package and a GPU).",
)
@click.option(
    "--fp16/--no-fp16",
    default=True,
    show_default=True,
    help="Also write half-precision graphs (qaft-run --precision fp16).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a model folder already at --out (nothing else is ever replaced).",
)
@fail_cleanly
def export(ckpt, out, check_image, tensorrt, fp16, force) -> None:
    """Export a model file to a model folder for qaft-run (ONNX graphs, the integer
    hyper-synthesis, tables, manifest)."""
    from qaft.export.onnx_export import check_target, export_model
    from qaft.runtime.image import load_rgb
    from qaft.training.checkpoint import load_model

    ckpt = _model_file(ckpt)
    inputs = [ckpt] + ([Path(check_image)] if check_image else [])
    check_target(out, force, inputs)  # before the model is loaded and the graphs checked

    if tensorrt:
        from qaft.export.tensorrt_engine import tensorrt_available

        if not tensorrt_available():
            raise click.ClickException(
                "--tensorrt: TensorRT is not installed here, nothing was written (export "
                "without --tensorrt: the ONNX graphs run on any ONNX Runtime)"
            )
    manifest = export_model(
        load_model(ckpt),
        out,
        load_rgb(check_image) if check_image else None,
        fp16=fp16,
        force=force,
    )
    errs = ", ".join(f"{k} {v:.1e}" for k, v in manifest.check["max_relative_error"].items())
    if tensorrt:
        from qaft.export.tensorrt_engine import build_engines

        engines = build_engines(out, {"analysis": 3, "synthesis": manifest.meta.M})
        click.echo(f"TensorRT engines: {', '.join(p.name for p in engines)}")
    click.echo(f"wrote {out} (fingerprint {manifest.fingerprint}; ONNX Runtime vs PyTorch: {errs})")

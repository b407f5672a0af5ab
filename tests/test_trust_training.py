"""Files and folders the PyTorch side is handed are data, not instructions: a checkpoint
runs no code, ``export --out`` destroys nothing but a model folder it was told to
replace, and a run folder is neither overwritten by a new run nor resumed with another
architecture."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO
from PIL import Image
from test_training import (
    tiny_run,
    train_dir,  # noqa: F401 (a fixture)
)

from qaft.cli.develop import main
from qaft.export.onnx_export import ExportTargetError, export_model
from qaft.runtime.model import ModelMeta
from qaft.training.checkpoint import CheckpointError, load_blob, load_model, save_model


class _Payload:
    """Unpickling this creates ``marker``: the harmless stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def qaft(*args) -> object:
    """``qaft ARGS`` in this process; the result of click's runner."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, needle: str = "") -> None:
    # a SystemExit from fail_cleanly, not an exception the runner caught (a traceback)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0]


# ---- 2. checkpoints are read without running code --------------------------------------------


@pytest.fixture
def evil(tmp_path) -> dict[str, pathlib.Path]:
    """A model file, a run folder and a delta model whose files run code when unpickled."""
    marker = tmp_path / "pwned"
    blob = {"format": "qaft-model", "version": 1, "model": _Payload(marker), "config": {}}
    (tmp_path / "evil").mkdir()
    torch.save(blob, tmp_path / "evil" / "model.pt")
    (tmp_path / "run").mkdir()
    torch.save(blob, tmp_path / "run" / "last.pt")
    (tmp_path / "delta").mkdir()  # a delta model file whose base is the evil one
    base = {"path": "../evil/model.pt", "weights_sha256": "0" * 64}
    delta = {"format": "qaft-model", "version": 2, "config": {}, "state_dict": {}, "base": base}
    torch.save({**delta, "tables": None, "meta": {}}, tmp_path / "delta" / "model.pt")
    return {
        "marker": marker,
        "model": tmp_path / "evil" / "model.pt",
        "run": tmp_path / "run",
        "delta": tmp_path / "delta" / "model.pt",
    }


def test_the_payload_is_live(evil):
    # what the old loaders (weights_only=False) did: the tests below would catch it
    torch.load(evil["model"], weights_only=False)
    assert evil["marker"].exists()


@pytest.mark.parametrize(
    "args",
    [
        ["import-compressai", "{model}", "--out", "{tmp}/x.pt"],
        ["export", "--ckpt", "{model}", "--out", "{tmp}/folder"],
        ["finetune", "--ckpt", "{model}", "--data", "{images}", "--out", "{tmp}/ft"],
        ["eval", "--ckpt", "{model}", "--data", "{images}"],
        ["eval", "--ckpt", "{delta}", "--data", "{images}"],
        ["calibrate", "--ckpt", "{model}", "--data", "{images}"],
        ["calibrate", "--ckpt", "{model}", "--data", "{images}", "--reset"],
        ["tune-quantizer", "--ckpt", "{model}", "--quantizer", "rdoq", "--data", "{images}"],
        ["train", "--resume", "--out", "{run}"],
        ["train", "--data", "{train}", "--lmbda", "0.01", "--out", "{tmp}/new", "--N", "8",
         "--M", "12", "--crop", "64", "--steps", "1", "--val-every", "0", "--init-from",
         "{model}"],
        ["snapshot", "--run", "{run}", "--out", "{tmp}/snap.pt"],
        ["finetune", "--ckpt", "{tiny}", "--data", "{train}", "--crop", "64", "--out", "{run}",
         "--resume"],
    ],
    ids=lambda a: " ".join(x for x in a if not x.startswith("{"))[:40],
)  # fmt: skip
def test_no_command_runs_code_from_a_checkpoint(
    evil,
    image_dir,
    train_dir,  # noqa: F811
    tiny_model_file,
    tmp_path,
    args,  # noqa: F811
):
    subs = {"{model}": evil["model"], "{delta}": evil["delta"], "{run}": evil["run"]}
    subs |= {"{images}": image_dir, "{train}": train_dir, "{tiny}": tiny_model_file}
    args = [str(subs.get(a, a)).replace("{tmp}", str(tmp_path)) for a in args]
    result = qaft(*args)
    assert not evil["marker"].exists()
    assert_one_line_error(result, "not a plain checkpoint (refusing to run code from it)")


def test_bundled_model_files_load_without_running_code():
    files = sorted(glob.glob(str(REPO / "training/zoo/*/*.pt")))
    files += sorted(glob.glob(str(REPO / "training/warm/*.pt")))
    assert files
    for f in files:
        assert isinstance(load_blob(f), dict), f
    assert load_model(REPO / "training/zoo/q3-sq/model.pt").meta.stage == 2  # via its base


def test_written_files_are_plain(train_dir, tiny_model_file, image_dir, tmp_path):  # noqa: F811
    """What qaft writes needs no allow-list at all: a bare weights-only load reads it."""
    from qaft.training.calibrate import fit_model, store
    from qaft.training.checkpoint import update_meta
    from qaft.training.finetune import FinetuneConfig, finetune
    from qaft.training.train import train

    final = train(tiny_run(train_dir, tmp_path, steps=2, ckpt_every=1), progress=False)
    ft = FinetuneConfig(ckpt=str(final), data=str(train_dir), out=str(tmp_path / "ft"),
                        steps=1, batch=1, crop=64, device="cpu")  # fmt: skip
    ft_final = finetune(ft, progress=False)
    model = tmp_path / "tiny.pt"
    shutil.copy(tiny_model_file, model)
    fingerprint = load_model(model).fingerprint
    update_meta(model, {"note": "rewritten"})
    assert load_model(model).fingerprint == fingerprint  # tables as tensors: the same model
    store(model, fit_model(model, sorted(image_dir.iterdir())).calibration, {"images": 3})
    for f in [final, tmp_path / "run" / "last.pt", ft_final, tmp_path / "ft" / "last.pt", model]:
        assert isinstance(torch.load(f, weights_only=True), dict), f


def _delta_pair(tiny_model_file, root: pathlib.Path) -> pathlib.Path:
    """A stage-1 model and a delta on it, laid out as in the zoo (q1/, q1-sq/)."""
    (root / "q1").mkdir(parents=True)
    shutil.copy(tiny_model_file, root / "q1" / "model.pt")
    loaded = load_model(tiny_model_file)
    with torch.no_grad():
        loaded.model.g_s[0].weight.add_(0.01)
    (root / "q1-sq").mkdir()
    delta = root / "q1-sq" / "model.pt"
    save_model(delta, loaded.model, replace(loaded.meta, stage=2), base=root / "q1" / "model.pt")
    return delta


def test_a_base_model_outside_the_zoo_folder_is_refused(tiny_model_file, tmp_path):
    delta = _delta_pair(tiny_model_file, tmp_path / "zoo")
    blob = load_blob(delta)
    assert blob["base"]["path"] == "../q1/model.pt"
    assert load_model(delta).meta.stage == 2
    outside = tmp_path / "elsewhere" / "model.pt"
    outside.parent.mkdir()
    shutil.copy(tiny_model_file, outside)  # a real, matching model: only its place is wrong
    for ref, needle in [
        (str(outside), "not a relative path"),
        ("../../elsewhere/model.pt", "lies outside"),
        ("../q1/../../elsewhere/model.pt", "lies outside"),
    ]:
        torch.save({**blob, "base": {**blob["base"], "path": ref}}, delta)
        with pytest.raises(CheckpointError, match=needle):
            load_model(delta)
    loaded = load_model(tiny_model_file)
    with pytest.raises(CheckpointError, match="lies outside"):
        save_model(tmp_path / "zoo" / "q1-sq" / "other.pt", loaded.model, ModelMeta(), base=outside)


# ---- 1. export --out replaces nothing but a model folder, and only with --force -------------


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("force", [False, True])
def test_export_refuses_a_folder_that_is_not_a_model_folder(tiny_model_file, tmp_path, force):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8 a photo")
    (tmp_path / "a-file").write_bytes(b"keep me")
    before = _tree(tmp_path)
    result = qaft("export", "--ckpt", tiny_model_file, "--out", photos, *(["--force"] * force))
    assert_one_line_error(result, str(photos))
    # a file: click's own check refuses it first; the export function refuses it too
    result = qaft("export", "--ckpt", tiny_model_file, "--out", tmp_path / "a-file")
    assert result.exit_code != 0
    with pytest.raises(ExportTargetError, match="is a file"):
        export_model(load_model(tiny_model_file), tmp_path / "a-file", force=force)
    assert _tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["a-file", "photos"]


@pytest.mark.parametrize("where", [".", "..", "{parent}"])
def test_export_refuses_the_working_directory_and_folders_above_it(
    tiny_model_file, tmp_path, monkeypatch, where
):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    # a model folder (the check that it is one must not matter) holding the cwd
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({"format": "qaft-model-dir"}))
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    out = str(tmp_path / "a") if where == "{parent}" else where
    result = qaft("export", "--ckpt", tiny_model_file, "--out", out, "--force")
    assert_one_line_error(result, "working directory")
    assert _tree(tmp_path) == before


def test_export_fills_an_empty_folder_and_replaces_a_model_folder_only_with_force(
    tiny_model_file, tmp_path
):
    out = tmp_path / "model"
    out.mkdir()
    args = ["export", "--ckpt", tiny_model_file, "--out", out, "--no-fp16"]
    assert qaft(*args).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "qaft-model-dir"
    (out / "analysis.engine").write_bytes(b"an engine of an earlier --tensorrt export")
    before = _tree(out)
    assert_one_line_error(qaft(*args), "--force")
    assert _tree(out) == before
    result = qaft(*args, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "analysis.engine").exists()
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == manifest["fingerprint"]
    assert os.listdir(tmp_path) == ["model"]  # no temporary or set-aside folder left


@pytest.mark.parametrize("extra", ["notes.txt", "model.pt", "sub/"])
def test_export_never_replaces_a_model_folder_holding_anything_else(
    tiny_model_file, tmp_path, extra
):
    """A user's file, the very checkpoint exported, a sub-folder: --force does not delete
    them with the model folder."""
    out = tmp_path / "model"
    args = ["export", "--ckpt", tiny_model_file, "--out", out, "--no-fp16"]
    assert qaft(*args).exit_code == 0
    if extra.endswith("/"):
        (out / extra).mkdir()
    else:
        (out / extra).write_bytes(b"mine")
    before = _tree(out)
    assert_one_line_error(qaft(*args, "--force"), "not a qaft model folder")
    assert _tree(out) == before
    (out / "manifest.json").write_text('{"format": "qaft-model-dir"}')  # the format alone
    assert_one_line_error(qaft(*args, "--force"), "not a qaft model folder")


def test_export_refuses_an_out_that_holds_its_inputs(tiny_model_file, tmp_path):
    out = tmp_path / "model"
    assert qaft("export", "--ckpt", tiny_model_file, "--out", out, "--no-fp16").exit_code == 0
    ckpt = out / "source.pt"
    ckpt.write_bytes(tiny_model_file.read_bytes())
    before = _tree(out)
    result = qaft("export", "--ckpt", ckpt, "--out", out, "--no-fp16", "--force")
    assert_one_line_error(result, "an input of the export")
    assert _tree(out) == before


def test_a_failed_swap_keeps_the_old_model_folder(tmp_path, monkeypatch):
    import shutil

    from qaft.export import onnx_export
    from qaft.runtime.zoo import model_path

    out, new = tmp_path / "model", tmp_path / ".model.new"
    for folder, text in [(out, "old"), (new, "new")]:  # real model folders, told apart
        shutil.copytree(model_path("q0"), folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "note": text}))
    real = os.replace

    def failing(src, dst):
        if pathlib.Path(src) == new:
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(onnx_export.os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        onnx_export._move_into_place(new, out, force=True)
    assert json.loads((out / "manifest.json").read_text())["note"] == "old"
    assert sorted(os.listdir(tmp_path)) == [".model.new", "model"]
    monkeypatch.setattr(onnx_export.os, "replace", real)
    onnx_export._move_into_place(new, out, force=True)
    assert json.loads((out / "manifest.json").read_text())["note"] == "new"
    assert os.listdir(tmp_path) == ["model"]


# ---- 3. run folders: --resume takes the run's settings, a new run does not overwrite one ----


@pytest.fixture
def run(train_dir, tmp_path) -> pathlib.Path:  # noqa: F811
    from qaft.training.train import train

    train(tiny_run(train_dir, tmp_path, steps=2, log_every=1, ckpt_every=1), progress=False)
    return tmp_path / "run"


def _steps(run: pathlib.Path) -> list[int]:
    return [json.loads(s)["step"] for s in (run / "log.jsonl").read_text().splitlines()]


def test_resume_takes_the_architecture_from_the_run(run):
    result = qaft("train", "--resume", "--out", run, "--steps", "3", "--N", "8")
    assert result.exit_code == 0, result.output
    assert _steps(run) == [1, 2, 3]
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["N"], cfg["M"], cfg["lmbda"], cfg["steps"], cfg["crop"]) == (8, 12, 0.01, 3, 64)


@pytest.mark.parametrize(
    "option", [["--N", "16"], ["--M", "24"], ["--lmbda", "0.02"], ["--stand-in", "ste"]]
)
def test_resume_refuses_options_that_contradict_the_run(run, option):
    before = _tree(run)
    result = qaft("train", "--resume", "--out", run, "--steps", "3", *option)
    assert_one_line_error(result, option[0])
    assert _tree(run) == before


def test_resume_through_the_api_refuses_another_architecture(run, train_dir, tmp_path):  # noqa: F811
    from qaft.training.train import RunFolderError, train

    cfg = tiny_run(train_dir, tmp_path, steps=3)
    with pytest.raises(RunFolderError, match="--N 16"):
        train(replace(cfg, N=16), resume=True, progress=False)


def test_a_new_run_refuses_a_folder_holding_a_run(run, train_dir, tiny_model_file):  # noqa: F811
    before = _tree(run)
    result = qaft("train", "--data", train_dir, "--lmbda", "0.01", "--out", run, "--N", "8",
                  "--M", "12", "--crop", "64", "--steps", "1", "--val-every", "0")  # fmt: skip
    assert_one_line_error(result, "--resume")
    result = qaft("finetune", "--ckpt", tiny_model_file, "--data", train_dir, "--out", run)
    assert_one_line_error(result, "--resume")
    assert _tree(run) == before


def test_a_new_run_may_use_an_empty_folder(train_dir, tmp_path):  # noqa: F811
    from qaft.training.train import train

    (tmp_path / "run").mkdir()
    assert train(tiny_run(train_dir, tmp_path, steps=1), progress=False).is_file()


# ---- a second round of attacks -----------------------------------------------------------


def test_snapshot_never_overwrites_a_file_or_the_runs_own_checkpoint(run, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    last = (run / "last.pt").read_bytes()
    assert_one_line_error(qaft("snapshot", "--run", run, "--out", precious), "--force")
    assert precious.read_text() == "mine"
    for target in (run / "last.pt", run / "model.pt"):
        result = qaft("snapshot", "--run", run, "--out", target, "--force")
        assert_one_line_error(result, "an input of this command")
    assert (run / "last.pt").read_bytes() == last
    assert qaft("snapshot", "--run", run, "--out", tmp_path / "snap.pt").exit_code == 0


def test_checkpoints_are_written_without_following_planted_links(run, tmp_path):
    """The old temporary name was `.NAME.tmpPID`: links planted at every such name for the
    PIDs around ours are never written through (the temporary now comes from mkstemp)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("victim data")
    shared = tmp_path / "shared"
    shared.mkdir()
    for pid in range(os.getpid() - 50, os.getpid() + 50):
        (shared / f".snap.pt.tmp{pid}").symlink_to(victim)
    assert qaft("snapshot", "--run", run, "--out", shared / "snap.pt").exit_code == 0
    assert victim.read_text() == "victim data"
    assert not (shared / "snap.pt").is_symlink()
    load_model(shared / "snap.pt")


def test_a_run_folder_with_planted_links_is_refused(train_dir, tmp_path):  # noqa: F811
    from qaft.training.train import RunFolderError, train

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").symlink_to(tmp_path / "created-elsewhere")  # dangling
    with pytest.raises(RunFolderError, match="is a symlink"):
        train(tiny_run(train_dir, tmp_path, steps=1), progress=False)
    assert not (tmp_path / "created-elsewhere").exists()


@pytest.mark.parametrize("config", [{"N": 6000, "M": 6000}, {"N": -1, "M": 8}, {"N": "x"}])
def test_a_tiny_file_cannot_declare_a_huge_model(tmp_path, config):
    path = tmp_path / "huge.pt"
    torch.save({"format": "qaft-model", "version": 1, "config": config, "state_dict": {},
                "tables": {}, "meta": {}}, path)  # fmt: skip
    (tmp_path / "imgs").mkdir()  # eval reads its images first: give it some (no Kodak needed)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    evaluate = ["eval", "--ckpt", path, "--data", tmp_path / "imgs"]
    for cmd in (evaluate, ["export", "--ckpt", path, "--out", tmp_path / "m"]):
        assert_one_line_error(qaft(*cmd), "huge.pt")


@pytest.mark.parametrize(
    "state",
    [
        {"g_a.0.weight": torch.zeros(8, 3, 5, 5)},  # the rest missing
        {"g_a.0.weight": 3},  # not a tensor
        {
            "g_a.0.weight": torch.zeros(1).expand(6000)[:, None, None, None].expand(6000, 3, 5, 5),
            "g_a.6.weight": torch.zeros(1).expand(6000)[:, None, None, None].expand(6000, 8, 5, 5),
            "h_s.4.weight": torch.zeros(1)
            .expand(12000)[:, None, None, None]
            .expand(12000, 8, 3, 3),
        },
    ],  # fmt: skip
)
def test_malformed_compressai_checkpoints_are_one_line(tmp_path, state):
    path = tmp_path / "cai.pt"
    torch.save(state, path)
    assert_one_line_error(qaft("import-compressai", path, "--out", tmp_path / "o.pt"))
    assert not (tmp_path / "o.pt").exists()


def test_malformed_model_files_are_one_line(tmp_path):
    bad = {"format": "qaft-model", "version": "x", "config": {}, "state_dict": {}}
    torch.save(bad, tmp_path / "v.pt")
    torch.save({**bad, "version": 1, "state_dict": None}, tmp_path / "s.pt")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    for name in ("v.pt", "s.pt"):
        result = qaft("eval", "--ckpt", tmp_path / name, "--data", tmp_path / "imgs")
        assert_one_line_error(result, name)


def test_a_deeply_nested_json_is_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000)
    assert_one_line_error(qaft("bdrate", deep, deep), "nested too deeply")


def test_resume_names_the_run_itself(run):
    result = qaft("train", "--resume", run, "--steps", "3")
    assert result.exit_code == 0, result.output
    assert _steps(run) == [1, 2, 3]
    assert qaft("train", "--resume", run, "--out", run.parent / "other").exit_code == 2


def test_finetune_resume_keeps_the_runs_fixed_settings(tiny_model_file, train_dir, tmp_path):  # noqa: F811
    out = tmp_path / "ft"
    base = ["finetune", "--ckpt", tiny_model_file, "--data", train_dir, "--out", out,
            "--steps", "1", "--crop", "64", "--batch", "2"]  # fmt: skip
    first = qaft(*base)
    assert first.exit_code == 0, first.output
    result = qaft(*base, "--resume", "--quantizer", "tcq", "--steps", "2")
    assert_one_line_error(result, "started with quantizer 'sq'")
    assert (
        qaft(*base[:-6], "--resume", "--steps", "2", "--crop", "64", "--batch", "2").exit_code == 0
    )


def test_the_run_log_is_never_written_through_a_link(train_dir, tmp_path):  # noqa: F811
    from qaft.runtime.files import open_append

    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "log.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        open_append(tmp_path / "log.jsonl")
    assert victim.read_text() == "keep"


@pytest.mark.parametrize(
    "option", [["--lmbda", "nan"], ["--crop", "3"], ["--batch", "0"], ["--steps", "-1"]]
)
def test_a_schedule_no_run_can_follow_is_refused_before_the_folder(tmp_path, option):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    args = ["--data", str(tmp_path / "imgs"), "--lmbda", "0.01", "--out", str(tmp_path / "r"),
            "--N", "8", "--M", "12", "--steps", "1", "--crop", "64", "--val-every", "0",
            "--batch", "2"]  # fmt: skip
    i = args.index(option[0])
    args[i + 1] = option[1]
    assert_one_line_error(qaft("train", *args))
    assert not (tmp_path / "r").exists()

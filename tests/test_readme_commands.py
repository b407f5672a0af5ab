"""Every `qaft` and `qaft-run` command in the README's shell blocks runs as written, in the
README's order, with the paths it documents, at a small scale: placeholders become small
folders, training runs a few steps of a tiny model.  Only what needs a machine this suite
does not have is left out (a Ray cluster: `tests/test_cluster.py` runs a local one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KODAK, REPO, synthetic_image
from PIL import Image

README = REPO / "README.md"
BIN = Path(sys.executable).parent

#: Placeholders and full-scale settings -> what this test runs instead (regex, replacement).
SMALL = [
    (r"\[[^\]]*\]", ""),  # optional parts: the command as it is without them
    (r"\bDIR\b", "imgs"),
    (r"\bOTHER\b", "q0"),
    (r"\.\./shared/data/train", "train"),
    (r"--steps 30000", "--steps 2 --val-every 0"),
    (r"--steps 60000", "--steps 3"),
    (r"--N 64 --M 96", "--N 8 --M 12"),
    (r"--batch 8 --crop 128", "--batch 2 --crop 64"),
]
#: What each command gets added to run small (the README's commands run on whole folders).
ADDED = {
    "qaft finetune": "--steps 2 --batch 2 --crop 64",
    "qaft tune-quantizer": "--max-images 1 --crop 64",
    "qaft calibrate": "--max-images 1",
    "qaft eval": "--data imgs --max-images 1",
    "qaft-run bench": "--data imgs --max-images 1 --repeat 1",
}
NEEDS_A_CLUSTER = "--ray"


def readme_commands() -> list[str]:
    """The README's commands for the two tools, continuation lines joined, comments cut."""
    text = README.read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if re.match(r"^(cat \S+ \| )?qaft(-run)? ", line):
                out.append(line)
    return out


def small(command: str) -> str:
    for pattern, repl in SMALL:
        command = re.sub(pattern, repl, command)
    for prefix, extra in ADDED.items():
        if re.match(rf"^{re.escape(prefix)} ", command):
            command += f" {extra}"
    return re.sub(r"\s+", " ", command).strip()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder laid out as the README's commands expect."""
    d = tmp_path_factory.mktemp("readme")
    for name in ("photos", "imgs", "train"):
        (d / name).mkdir()
    kodak = sorted(KODAK.glob("*.png"))[:2] if KODAK.is_dir() else []
    for i in range(2):
        img = (
            Image.open(kodak[i]).crop((0, 0, 256, 192))
            if kodak
            else Image.fromarray(synthetic_image(192, 256, i))
        )
        img.save(d / "photos" / f"p{i}.png")
        img.save(d / "imgs" / f"i{i}.png")
    for i in range(4):
        Image.fromarray(synthetic_image(96, 96, 10 + i)).save(d / "train" / f"t{i}.png")
    shutil.copy(d / "photos" / "p0.png", d / "photo.png")
    shutil.copy(
        REPO / "tests" / "fixtures" / "compressai_msh_n8_m12.pth.tar",
        d / "compressai_checkpoint.pth.tar",
    )
    (d / "results").symlink_to(REPO / "results")
    return d


def test_the_readme_has_commands_to_run():
    commands = readme_commands()
    assert len(commands) > 20
    assert any(c.startswith("qaft train") for c in commands)
    assert any(c.startswith("qaft-run compress") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(workdir):
    if not KODAK.is_dir():
        pytest.skip("needs ../shared/data/kodak: bdrate compares with the Kodak anchors")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for command in readme_commands():
        if NEEDS_A_CLUSTER in command:
            continue
        cmd = small(command)
        r = subprocess.run(
            cmd, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, f"{command}\n(ran: {cmd})\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, cmd
        ran.append(cmd)
    assert len(ran) > 20
    assert (workdir / "models" / "q3" / "manifest.json").is_file()
    assert (workdir / "rd.png").is_file() and (workdir / "model.pt").is_file()

"""Every `qaft` and `qaft-run` command in the shell blocks of the README and of the command
reference (`docs/commands.md`) runs as written, in each page's order, with the paths it
documents, at a small scale: placeholders become small folders, training runs a few steps of
a tiny model.  Only what needs a machine this suite does not have is left out (a Ray
cluster: `tests/test_cluster.py` runs a local one); `pip` and `make` lines are not run."""

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
COMMANDS = REPO / "docs" / "commands.md"
#: The README is a user's guide; detail belongs in docs/.
README_MAX_LINES = 250
BIN = Path(sys.executable).parent

#: Placeholders and full-scale settings -> what this test runs instead (regex, replacement).
SMALL = [
    (r"\[[^\]]*\]", ""),  # optional parts: the command as it is without them
    (r"\bDIR\b", "imgs"),
    (r"\bOTHER\b", "q0"),
    (r"\.\./shared/data/train", "train"),
    (r"\.\./shared/data/kodak", "imgs"),
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


def readme_commands(page: Path = README) -> list[str]:
    """A page's commands for the two tools, continuation lines joined, comments cut."""
    text = page.read_text()
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


@pytest.fixture
def workdir(tmp_path_factory) -> Path:
    """A folder laid out as the pages' commands expect (a fresh one for each page)."""
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


def test_the_readme_is_a_guide_not_a_notebook():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_has_commands_to_run():
    commands = readme_commands()
    assert len(commands) > 20
    assert any(c.startswith("qaft train") for c in commands)
    assert any(c.startswith("qaft finetune") for c in commands)
    assert any(c.startswith("qaft export") for c in commands)
    assert any(c.startswith("qaft-run compress") for c in commands)


def test_the_command_reference_has_commands_to_run():
    commands = readme_commands(COMMANDS)
    assert len(commands) > 20
    assert any(c.startswith("qaft train") for c in commands)
    assert any(c.startswith("qaft-run compress") for c in commands)


def run_page(page: Path, workdir: Path) -> list[str]:
    """Runs a page's commands in order in workdir; returns them as run."""
    if not KODAK.is_dir():
        pytest.skip("needs ../shared/data/kodak: bdrate compares with the Kodak anchors")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for command in readme_commands(page):
        if NEEDS_A_CLUSTER in command:
            continue
        cmd = small(command)
        r = subprocess.run(
            cmd, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, f"{command}\n(ran: {cmd})\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, cmd
        ran.append(cmd)
    return ran


@pytest.mark.slow
def test_every_readme_command_runs_as_written(workdir):
    ran = run_page(README, workdir)
    assert len(ran) > 20
    # the walkthrough ends with qaft-run on the folder it exported
    assert (workdir / "models" / "q3-tcq" / "manifest.json").is_file()
    assert (workdir / "mine.png").is_file()
    assert sorted(p.stem for p in (workdir / "mine-restored").glob("*.png")) == ["p0", "p1"]


@pytest.mark.slow
def test_every_command_of_the_reference_runs_as_written(workdir):
    ran = run_page(COMMANDS, workdir)
    assert len(ran) > 20
    assert (workdir / "models" / "q3" / "manifest.json").is_file()
    assert (workdir / "rd.png").is_file() and (workdir / "model.pt").is_file()

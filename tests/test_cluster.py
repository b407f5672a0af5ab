"""`qaft-run compress --ray` on a local Ray cluster of two workers: the same bytes as a
local run, a worker killed mid-run, finished files skipped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, synthetic_image
from PIL import Image

pytest.importorskip("ray", reason="Ray is the [distributed] extra")

QAFT_RUN = str(Path(sys.executable).parent / "qaft-run")


@pytest.fixture(scope="module")
def folder_and_local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    src = root / "in" / "sub"
    src.mkdir(parents=True)
    for i in range(64):
        Image.fromarray(synthetic_image(192, 256 + 8 * (i % 3), i)).save(src / f"{i:02d}.png")
    local = root / "local"
    r = run_cli("qaft-run", "compress", str(root / "in"), "--recursive", "--model", "q3",
                "--out", str(local), "--threads", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root / "in", local


def _same_files(a: Path, b: Path) -> None:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb and len(fa) == 64
    for rel in fa:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_ray_run_writes_the_local_bytes_and_skips_finished_files(folder_and_local_run, tmp_path):
    src, local = folder_and_local_run
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for name in ("00.qaft", "01.qaft", "02.qaft"):  # as if an earlier run had done these
        shutil.copy2(local / "sub" / name, out / "sub" / name)  # times kept: up to date
    r = run_cli("qaft-run", "compress", str(src), "--recursive", "--model", "q3", "--out",
                str(out), "--ray", "--workers", "2", "--threads", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "compressed 61, skipped 3 up to date" in r.stdout
    assert "Traceback" not in r.stderr
    _same_files(local, out)


def _ray_workers() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"ray::_Worker" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_a_worker_killed_mid_run_and_the_job_still_completes(folder_and_local_run, tmp_path):
    src, local = folder_and_local_run
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            QAFT_RUN,
            "compress",
            str(src),
            "--recursive",
            "--model",
            "q3",
            "--out",
            str(out),
            "--ray",
            "--workers",
            "2",
            "--threads",
            "1",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.qaft"))) < 8:
        time.sleep(0.01)
    workers = _ray_workers()
    assert proc.poll() is None and len(workers) == 2, "the run ended before the kill"
    os.kill(workers[0], signal.SIGKILL)
    written_at_kill = len(list(out.rglob("*.qaft")))
    stdout, stderr = proc.communicate(timeout=300)
    assert written_at_kill < 64
    assert proc.returncode == 0, stderr
    assert "compressed 64, skipped 0 up to date" in stdout and "failed 0" in stdout
    _same_files(local, out)


def test_unreachable_cluster_is_a_one_line_error(tmp_path, image_dir):
    r = run_cli("qaft-run", "compress", str(image_dir), "--model", "q3", "--out",
                str(tmp_path / "o"), "--ray", "127.0.0.1:1", timeout=120)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot start or join Ray at 127.0.0.1:1" in r.stderr
    assert not (tmp_path / "o").exists()

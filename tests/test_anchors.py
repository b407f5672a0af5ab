"""benchmarks/anchors.py: each classical anchor codes real bytes that decode to the image's
shape, and the script writes results files that read back (small synthetic images)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO

from qaft.runtime.tools.rate_distortion import read_points

SCRIPT = REPO / "benchmarks" / "anchors.py"


def _anchors():
    spec = importlib.util.spec_from_file_location("anchors", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["anchors"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _available(key: str) -> bool:
    from PIL import features

    if key == "jxl":
        return importlib.util.find_spec("imagecodecs") is not None
    if key.startswith("avif"):
        return bool(features.check("avif"))
    return True


@pytest.mark.parametrize("key", list(_anchors().ANCHORS))
def test_anchor_rate_rises_with_quality(key, image_dir):
    if not _available(key):
        pytest.skip(f"{key}: its library is not installed")
    mod = _anchors()
    values = mod.ANCHORS[key].values
    path = sorted(image_dir.iterdir())[0]
    # the sweep runs from the lowest quality to the highest
    low, high = (mod.code_image(key, v, path) for v in (values[0], values[-1]))
    assert 0 < low.bytes < high.bytes
    assert low.psnr < high.psnr
    assert low.encoding_time > 0 and low.decoding_time > 0


def test_script_writes_results_that_read_back(image_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--data", str(image_dir), "--out", str(out)]
    cmd += ["--codecs", "webp-m6,jpeg-opt", "--values", "40,90", "--jobs", "1", "--limit", "2"]
    subprocess.run(cmd, check=True, capture_output=True)
    for key in ("webp-m6", "jpeg-opt"):
        points = read_points(out / f"{key}.json")
        assert [p["model"]["quality"] for p in points] == [40, 90]
        assert all(len(p["images"]) == 2 for p in points)
        assert points[0]["summary"]["bpp"] < points[1]["summary"]["bpp"]

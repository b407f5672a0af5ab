"""Streams written on another machine decode to the indices their encoder produced.

``tests/fixtures/golden`` holds small ``.qaft`` files of a bundled model, written once
(``scripts/make_golden.py``, on the CPU named in ``golden.json``); every machine that runs
the suite since checks that its decoder recovers the very same y and z indices, the
bit-exactness the container promises across machines and backends.
"""

import json
from pathlib import Path

import pytest
from conftest import index_digest, synthetic_image

from qaft.runtime import codec as C
from qaft.runtime.metrics import psnr
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.onnx_backend import onnx_codec
from qaft.runtime.zoo import model_path

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
META = json.loads((GOLDEN / "golden.json").read_text())


@pytest.fixture(scope="module")
def codec():
    c = onnx_codec(open_model_dir(model_path(META["model"])), "cpu", threads=1)
    if c.fingerprint.hex() != META["fingerprint"]:
        pytest.fail(
            f"bundled {META['model']} is not the model of the golden streams: after "
            "replacing it, run python scripts/make_golden.py"
        )
    return c


@pytest.mark.parametrize("stream", META["streams"], ids=lambda s: s["file"])
def test_golden_stream_decodes_to_its_encoders_indices(codec, stream):
    data = (GOLDEN / stream["file"]).read_bytes()
    dec = C.decode(codec, data)
    assert index_digest(dec.y_indices) == stream["y_indices"]
    assert index_digest(dec.z_indices) == stream["z_indices"]
    h, w, seed = stream["image"]
    assert dec.image.shape == (h, w, 3)
    # the synthesis is float, so the pixels may differ in the last bits between machines
    assert psnr(dec.image, synthetic_image(h, w, seed)) == pytest.approx(stream["psnr"], abs=0.05)

"""Streams written on another machine decode to the indices their encoder produced.

``tests/fixtures/golden`` holds small ``.qaft`` files of bundled models, every quantizer,
written once (``scripts/make_golden.py``, on the CPU named in ``golden.json``); every
machine that runs the suite since checks that its decoder recovers the very same y and z
indices, the bit-exactness the container promises across machines and backends.  The q0
``tcq`` streams are of container version 2 (tables from libm, read as they were written);
the others of the version their quantizer writes today.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import index_digest, synthetic_image

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.metrics import psnr
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.quantizers import QUANTIZER_IDS
from qaft.runtime.zoo import model_path

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
META = json.loads((GOLDEN / "golden.json").read_text())


@pytest.fixture(scope="module")
def codecs():
    """The codec of each model of the golden streams, opened on first use."""
    opened = {}

    def get(model: str):
        if model not in opened:
            c = onnx_codec(open_model_dir(model_path(model)), "cpu", threads=1)
            if c.model.fingerprint.hex() != META["models"][model]:
                pytest.fail(
                    f"bundled {model} is not the model of the golden streams: after "
                    "replacing it, delete its streams and run python scripts/make_golden.py"
                )
            opened[model] = c
        return opened[model]

    return get


def test_golden_streams_cover_every_quantizer_and_exact_trellis_tables():
    assert {s["quantizer"] for s in META["streams"]} == set(QUANTIZER_IDS)
    # version 3 (exact tables) for both trellis quantizers; the q0 tcq streams of version 2
    # (libm tables) stay until q0 is replaced
    for q in ("tcq", "tcq8"):
        assert 3 in {s["format_version"] for s in META["streams"] if s["quantizer"] == q}
    assert len({s["model"] for s in META["streams"]}) > 1


@pytest.mark.parametrize("stream", META["streams"], ids=lambda s: s["file"])
def test_golden_stream_decodes_to_its_encoders_indices(codecs, stream):
    data = (GOLDEN / stream["file"]).read_bytes()
    dec = C.decode(codecs(stream["model"]), data)
    assert dec.header.quantizer_id == QUANTIZER_IDS[stream["quantizer"]]
    assert dec.header.version == stream["format_version"]
    assert dec.header.step == np.float32(stream["step"])
    assert index_digest(dec.y_indices) == stream["y_indices"]
    assert index_digest(dec.z_indices) == stream["z_indices"]
    h, w, seed = stream["image"]
    assert dec.image.shape == (h, w, 3)
    # the synthesis is float, so the pixels may differ in the last bits between machines
    assert psnr(dec.image, synthetic_image(h, w, seed)) == pytest.approx(stream["psnr"], abs=0.05)

"""Model metadata and manifests: one parser and one writer, giving back the files' own bytes.

Torch-free: the runtime reads these from folders of any origin."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from qaft.runtime.model import MetadataError, ModelMeta
from qaft.runtime.model_dir import MANIFEST, Manifest, ModelDirError
from qaft.runtime.quantizers import QuantizerParams
from qaft.runtime.zoo import ZOO_DIR

BUNDLED = sorted(p.parent.name for p in Path(ZOO_DIR).glob(f"*/{MANIFEST}"))


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_manifest_round_trips_to_identical_json(name):
    text = (Path(ZOO_DIR) / name / MANIFEST).read_text()
    manifest = Manifest.from_dict(json.loads(text), name)
    assert manifest.to_json() == text
    # the model metadata alone, as a model file stores it, survives its own round trip
    meta = manifest.meta.to_dict()
    assert json.dumps(ModelMeta.from_dict(meta).to_dict()) == json.dumps(meta)


def test_a_model_files_key_order_and_unknown_keys_survive():
    raw = {
        "lmbda": 0.0067,
        "stage": 2,
        "finetuned_for": "tcq",
        "steps": 100,
        "N": 4,
        "M": 2,
        "synthesis_gain": [1.0, 2.5],
        "quantizers": {"tcq": {"step": 0.7, "lmbda": 0.1}},
        "calibration": {"images": 3},
        "note": "kept",
    }
    meta = ModelMeta.from_dict(raw)
    assert json.dumps(meta.to_dict()) == json.dumps(raw)
    assert meta.extra == {"note": "kept"}
    assert meta.quantizer_params() == {"tcq": QuantizerParams(0.7, 0.1)}
    assert meta.distortion_weights().shape == (1, 2, 1, 1)
    # a key removed is left out; a key added follows the file's own keys
    dropped = replace(meta, calibration=None, parent_fingerprint="00" * 8).to_dict()
    assert "calibration" not in dropped and list(dropped)[-1] == "parent_fingerprint"


def test_the_writers_layouts():
    trained = ModelMeta.trained(0.01, 64, 96, "mixed", 10, None).to_dict()
    assert list(trained) == [
        *("lmbda", "stage", "finetuned_for", "stand_in", "steps", "N", "M", "init_from")
    ]
    assert trained["init_from"] is None and trained["stage"] == 1
    imported = ModelMeta.imported(None, 64, 96, "compressai", "a.pth", None).to_dict()
    assert list(imported) == [
        *("lmbda", "stage", "finetuned_for", "source", "source_file", "name", "N", "M")
    ]


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"lmbda": "0.01"}, "'lmbda'"),
        ({"stage": 0}, "'stage'"),
        ({"finetuned_for": 1}, "'finetuned_for'"),
        ({"quantizers": {"tcq": {"step": 100.0, "lmbda": 0.1}}}, "'quantizers.tcq'"),
        ({"M": 2, "synthesis_gain": [1.0]}, "'synthesis_gain'"),
        ({"N": True}, "'N'"),
    ],
)
def test_bad_metadata_is_one_line_naming_the_field(raw, field):
    with pytest.raises(MetadataError, match=field):
        ModelMeta.from_dict(raw, "model.pt")


def test_a_manifest_field_error_is_a_model_dir_error():
    text = (Path(ZOO_DIR) / BUNDLED[0] / MANIFEST).read_text()
    bad = {**json.loads(text), "stage": "1"}
    with pytest.raises(ModelDirError, match="'stage'"):
        Manifest.from_dict(bad, "m")

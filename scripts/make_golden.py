"""Write the golden streams of ``tests/test_golden.py``: small ``.qaft`` files of bundled
models and the indices their encoder produced, so that every later machine checks that it
decodes what another machine wrote, bit for bit.

    python scripts/make_golden.py                 # the streams of STREAMS not yet there
    python scripts/make_golden.py --replace q0    # after replacing q0: its streams anew

A stream is written once and kept: files from many machines (and from earlier container
versions: the q0 ``tcq`` files of version 2 carry libm tables) are the point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from qaft.runtime import codec as C  # noqa: E402
from qaft.runtime.backends.onnx import onnx_codec  # noqa: E402
from qaft.runtime.metrics import psnr  # noqa: E402
from qaft.runtime.model_dir import open_model_dir  # noqa: E402
from qaft.runtime.tools.synthetic import index_digest, synthetic_image  # noqa: E402
from qaft.runtime.zoo import model_path  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "golden"
# (model, height, width, seed, quantizer, step Δ or None for the model's own): sizes a
# multiple of the downsampling and odd ones that need padding; every quantizer, a trellis
# step other than the default, and a stage-2 model
STREAMS = [
    *[("q0", h, w, seed, q, None) for h, w, seed in [(64, 128, 0), (70, 50, 1), (192, 256, 2)]
      for q in ("sq", "tcq")],
    *[("q0", 96, 64, 3, q, None) for q in ("rdoq", "tcq", "tcq8")],
    ("q0", 96, 64, 3, "tcq", 0.55),
    ("q0", 70, 50, 4, "tcq8", 0.5),
    *[("q1-tcq", 64, 128, 5, q, None) for q in ("tcq", "tcq8", "rdoq")],
    ("q1-tcq", 192, 256, 6, "tcq", 0.55),
]  # fmt: skip


def stream_name(model: str, h: int, w: int, q: str, step: float | None) -> str:
    """File name of a golden stream."""
    return f"{model}-{h}x{w}-{q}" + ("" if step is None else f"-step{step:g}") + ".qaft"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="MODEL",
        help="delete the streams of MODEL (replaced in the zoo) and write them anew",
    )
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    meta_path = OUT / "golden.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    models = meta.setdefault("models", {})
    streams = meta.setdefault("streams", [])
    for model in args.replace:
        for s in [s for s in streams if s["model"] == model]:
            (OUT / s["file"]).unlink(missing_ok=True)
            streams.remove(s)
        models.pop(model, None)
    have = {s["file"] for s in streams}
    codecs = {}
    written = 0
    for model, h, w, seed, q, step in STREAMS:
        name = stream_name(model, h, w, q, step)
        if name in have:
            continue
        if model not in codecs:
            codecs[model] = onnx_codec(open_model_dir(model_path(model)), "cpu", threads=1)
        codec = codecs[model]
        if models.setdefault(model, codec.model.fingerprint.hex()) != codec.model.fingerprint.hex():
            raise SystemExit(f"{model} changed: delete its golden streams first")
        params = codec.model.params(q)
        if step is not None:
            params = dataclasses.replace(params, delta=step)
        img = synthetic_image(h, w, seed)
        enc = C.encode(codec, img, q, params)
        (OUT / name).write_bytes(enc.data)
        streams.append(
            {"file": name, "model": model, "image": [h, w, seed], "quantizer": q,
             "step": C.read_header(enc.data).step,
             "format_version": C.read_header(enc.data).version,
             "y_indices": index_digest(enc.y_indices),
             "z_indices": index_digest(enc.z_indices),
             "psnr": round(psnr(C.decode(codec, enc.data).image, img), 3),
             "cpu": _cpu_name(), "machine": platform.machine()}
        )  # fmt: skip
        written += 1
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{written} new streams in {OUT} (of {len(streams)}), written on {_cpu_name()}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()

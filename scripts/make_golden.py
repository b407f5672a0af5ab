"""Write the golden streams of ``tests/test_golden.py``: small ``.qaft`` files of a bundled
model and the indices their encoder produced, so that every later machine checks that it
decodes what another machine wrote, bit for bit.

    python scripts/make_golden.py          # after replacing the model it uses (GOLDEN_MODEL)

Rewrite them only when that model changes: files from many machines are the point.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import index_digest, synthetic_image  # noqa: E402

from qaft.runtime import codec as C  # noqa: E402
from qaft.runtime.metrics import psnr  # noqa: E402
from qaft.runtime.model_dir import open_model_dir  # noqa: E402
from qaft.runtime.onnx_backend import onnx_codec  # noqa: E402
from qaft.runtime.zoo import model_path  # noqa: E402

GOLDEN_MODEL = "q0"
OUT = REPO / "tests" / "fixtures" / "golden"
# (height, width, seed): a multiple of the downsampling, and an odd size that needs padding
IMAGES = [(64, 128, 0), (70, 50, 1), (192, 256, 2)]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    codec = onnx_codec(open_model_dir(model_path(GOLDEN_MODEL)), "cpu", threads=1)
    streams = []
    for h, w, seed in IMAGES:
        for q in ("sq", "tcq"):
            img = synthetic_image(h, w, seed)
            enc = C.encode(codec, img, q)
            name = f"{GOLDEN_MODEL}-{h}x{w}-{q}.qaft"
            (OUT / name).write_bytes(enc.data)
            streams.append(
                {"file": name, "image": [h, w, seed], "quantizer": q,
                 "y_indices": index_digest(enc.y_indices),
                 "z_indices": index_digest(enc.z_indices),
                 "psnr": round(psnr(C.decode(codec, enc.data).image, img), 3)}
            )  # fmt: skip
    meta = {
        "model": GOLDEN_MODEL,
        "fingerprint": codec.fingerprint.hex(),
        "written_on": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": _cpu_name(),
        "streams": streams,
    }
    (OUT / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(streams)} streams of {GOLDEN_MODEL} in {OUT} (written on {meta['cpu']})")


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

"""What PNG writing costs a decode, per zlib compression level (issue 27, item 3).

    python benchmarks/png_level.py --data DIR [--model q3] [--images 12] [--repeat 3]

Decodes each image's ``.qaft`` file once (the model's synthesis output is what
``qaft-run decompress`` writes), then times Pillow's PNG writer on it at each level, levels
taking turns image by image so that every ratio is measured under the same load.  Prints, per
level, the median milliseconds per image, the total bytes, and both relative to level 6
(Pillow's default), beside the decode itself (entropy decoding and synthesis).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.tools.rate_distortion import default_images
from qaft.runtime.zoo import resolve

LEVELS = (0, 1, 2, 3, 6, 9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_images(), help="image folder (default: $QAFT_DATA)")
    ap.add_argument("--model", default="q3")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not args.data:
        ap.error("no image folder: pass --data DIR (Kodak) or set QAFT_DATA")
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[: args.images]
    codec = onnx_codec(open_model_dir(resolve(args.model)), "cpu", args.threads)
    decoded, decode_ms = [], []
    for f in files:
        data = C.encode(codec, load_rgb(f)).data
        t0 = time.perf_counter()
        decoded.append(C.decode(codec, data).image)
        decode_ms.append(1000 * (time.perf_counter() - t0))
    times: dict[int, list[float]] = {lv: [] for lv in LEVELS}
    sizes: dict[int, int] = {lv: 0 for lv in LEVELS}
    for rep in range(args.repeat):
        for img in decoded:
            pil = Image.fromarray(np.asarray(img))
            for lv in LEVELS:
                buf = io.BytesIO()
                t0 = time.perf_counter()
                pil.save(buf, format="PNG", compress_level=lv)
                times[lv].append(1000 * (time.perf_counter() - t0))
                if rep == 0:
                    sizes[lv] += buf.tell()
    base_t, base_s = statistics.median(times[6]), sizes[6]
    print(
        f"{len(files)} images of {args.data}, model {args.model}: decode (entropy + synthesis) "
        f"median {statistics.median(decode_ms):.0f} ms"
    )
    print("level  ms/image  vs 6   bytes        vs 6")
    for lv in LEVELS:
        t = statistics.median(times[lv])
        print(f"{lv:>5}  {t:8.1f}  {t / base_t:4.2f}  {sizes[lv]:>11,}  {sizes[lv] / base_s:5.3f}")


if __name__ == "__main__":
    main()

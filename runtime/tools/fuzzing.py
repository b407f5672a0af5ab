"""Fuzzing the decoder with mutated ``.qaft`` files: zero crashes, zero hangs.

    python -m qaft.runtime.tools.fuzzing --model q3 --count 10000 [--seed 0] [--json OUT]

Seeds are real files the model writes (small images, every quantizer).  Each mutant gets
one to three mutations: bit flips, byte overwrites, truncation, appended bytes, a chunk
copied over another place, or a header field set to an edge value (sizes of zero or
billions, a NaN or negative step, unknown quantizer ids, section counts); half of these get
a recomputed checksum, as a crafted file would, so that the damage reaches the parser
instead of stopping at the CRC.  A third of all mutants are bit flips inside the coded
sections with sizes and checksum intact: they reach the entropy decoder.

Outcomes: ``decoded`` (the mutant still forms a valid stream: possible once the checksum is
fixed), ``refused`` (a :class:`QaftError`, which the CLI prints as one line), ``crash`` (any
other exception: a traceback in the CLI) and ``slow`` (longer than ``--limit`` seconds).
The run passes with zero crashes and zero slow files.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
import time
import zlib
from collections import Counter

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime.container import HEADER_STRUCT
from qaft.runtime.errors import QaftError
from qaft.runtime.quantizers import QUANTIZERS

_FIELDS = {  # header field -> (offset, struct format)
    "version": (4, "<B"),
    "quantizer": (5, "<B"),
    "height": (16, "<I"),
    "width": (20, "<I"),
    "step": (24, "<f"),
    "n_sections": (28, "<B"),
}
_EDGE = {
    "version": [0, 2, 255],
    "quantizer": [0, 1, 2, 3, 4, 17, 255],
    "height": [0, 1, 63, 65, 4096, 65535, 1 << 31, 0xFFFFFFFF],
    "width": [0, 1, 63, 65, 4096, 65535, 1 << 31, 0xFFFFFFFF],
    "step": [0.0, -1.0, float("nan"), float("inf"), 1e-30, 1e30, 0.5, 2.0],
    "n_sections": [0, 1, 3, 5, 255],
}


def mutate(data: bytes, rng: np.random.Generator, donor: bytes) -> bytes:
    """One random mutant of ``data`` (``donor``: another valid file to splice from)."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 6))
        if kind == 0 and buf:  # flip 1-8 bits
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, len(buf)))
                buf[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and buf:  # overwrite bytes
            i = int(rng.integers(0, len(buf)))
            n = int(rng.integers(1, 17))
            buf[i : i + n] = rng.integers(0, 256, min(n, len(buf) - i), dtype=np.uint8).tobytes()
        elif kind == 2:  # truncate
            buf = buf[: int(rng.integers(0, len(buf) + 1))]
        elif kind == 3:  # append
            buf += rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        elif kind == 4 and donor:  # splice a chunk of another file
            a = int(rng.integers(0, len(donor)))
            chunk = donor[a : a + int(rng.integers(1, 65))]
            i = int(rng.integers(0, len(buf) + 1))
            buf[i : i + len(chunk)] = chunk
        elif kind == 5 and len(buf) >= HEADER_STRUCT.size:  # header field at an edge value
            name = list(_FIELDS)[int(rng.integers(0, len(_FIELDS)))]
            off, fmt = _FIELDS[name]
            values = _EDGE[name]
            struct.pack_into(fmt, buf, off, values[int(rng.integers(0, len(values)))])
    return bytes(buf)


def mutate_body(data: bytes, rng: np.random.Generator) -> bytes:
    """Bit flips inside the sections only, sizes kept, checksum recomputed: a mutant that
    passes every structural check and reaches the entropy decoder."""
    n = data[HEADER_STRUCT.size - 1] if len(data) >= HEADER_STRUCT.size else 0
    start = HEADER_STRUCT.size + 4 * n
    if len(data) - 4 <= start:
        return data
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(start, len(buf) - 4))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return fix_checksum(bytes(buf))


def fix_checksum(data: bytes) -> bytes:
    """The same bytes with a valid CRC-32 trailer (as a crafted file would have)."""
    if len(data) < 4:
        return data
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def fuzz(codec: C.Codec, seeds: list[bytes], count: int, seed: int = 0, limit: float = 10.0):
    """Decodes ``count`` mutants of ``seeds``; returns (outcome counts, refusal reasons,
    crash examples, slowest decode in seconds)."""
    rng = np.random.default_rng(seed)
    outcomes: Counter = Counter()
    reasons: Counter = Counter()
    crashes: list[str] = []
    slowest = 0.0
    for i in range(count):
        base = seeds[i % len(seeds)]
        if rng.random() < 1 / 3:
            data = mutate_body(base, rng)
        else:
            data = mutate(base, rng, seeds[int(rng.integers(0, len(seeds)))])
            if rng.random() < 0.5:
                data = fix_checksum(data)
        t0 = time.perf_counter()
        try:
            C.decode(codec, data)
            outcome = "decoded"
        except QaftError as exc:
            outcome = "refused"
            reasons[re.sub(r"[0-9a-f.e+-]*[0-9][0-9a-f.e+-]*", "N", str(exc))[:70]] += 1
        except Exception:  # noqa: BLE001 - anything else is what we hunt for
            outcome = "crash"
            if len(crashes) < 10:
                import traceback

                crashes.append(traceback.format_exc()[-1500:])
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        outcomes["slow" if dt > limit else outcome] += 1
    return outcomes, reasons, crashes, slowest


#: Declared sizes of the crafted files: from one tile to the largest the format allows.
CRAFTED_SIZES = [(64, 64), (1024, 1024), (4096, 4096), (16384, 16384), (64, 1 << 22)]


def crafted(seeds: list[bytes]) -> dict[str, bytes]:
    """Files made by hand with a valid checksum, the cheapest way to claim a large image:
    every section empty, or a real file's sections under a header declaring far more
    pixels than they can hold.  Each must be refused at once (the decoder's work is bounded
    by the data present, not by the size declared)."""
    from qaft.runtime.container import FORMAT_VERSION

    fp = seeds[0][8:16]
    out = {}
    for h, w in CRAFTED_SIZES:
        for qid in (0, 2):
            head = HEADER_STRUCT.pack(b"QAFT", FORMAT_VERSION, qid, 0, fp, h, w, 1.0, 4)
            out[f"empty sections, q{qid}, {w}x{h}"] = fix_checksum(head + bytes(4 * 4) + bytes(4))
        for i, seed in enumerate(seeds):
            if h * w > 128 * 128:  # larger than every seed
                buf = bytearray(seed)
                struct.pack_into("<II", buf, 16, h, w)
                out[f"seed {i} declared {w}x{h}"] = fix_checksum(bytes(buf))
    for i, seed in enumerate(seeds):  # the y sections dropped, the z sections kept
        n = seed[HEADER_STRUCT.size - 1]
        lengths = list(struct.unpack_from(f"<{n}I", seed, HEADER_STRUCT.size))
        body = seed[
            HEADER_STRUCT.size + 4 * n : HEADER_STRUCT.size + 4 * n + lengths[0] + lengths[1]
        ]
        table = struct.pack("<4I", lengths[0], lengths[1], 0, 0)
        out[f"seed {i}, y sections empty"] = fix_checksum(
            seed[: HEADER_STRUCT.size] + table + body + bytes(4)
        )
    return out


def run_crafted(codec: C.Codec, files: dict[str, bytes]) -> dict[str, tuple[str, float]]:
    """{name: (outcome, seconds)} for each crafted file."""
    results = {}
    for name, data in files.items():
        t0 = time.perf_counter()
        try:
            C.decode(codec, data)
            outcome = "decoded"
        except QaftError as exc:
            outcome = f"refused: {exc}"
        except Exception as exc:  # noqa: BLE001 - anything else is what we hunt for
            outcome = f"crash: {type(exc).__name__}: {exc}"
        results[name] = (outcome, time.perf_counter() - t0)
    return results


def seed_files(codec: C.Codec, images: list[np.ndarray]) -> list[bytes]:
    """Valid files of ``images`` with every quantizer."""
    return [C.encode(codec, img, q).data for img in images for q in QUANTIZERS]


def main() -> None:
    from qaft.runtime.backends.onnx import onnx_codec
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import model_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="q3")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=10.0, help="Seconds counted as a hang.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="Write the figures here.")
    args = ap.parse_args()

    codec = onnx_codec(open_model_dir(model_path(args.model)), "cpu", args.threads)
    rng = np.random.default_rng(args.seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (40, 72)]]
    yy, xx = np.mgrid[0:96, 0:128]
    images.append(np.stack([(xx * 2) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.uint8))
    seeds = seed_files(codec, images)
    t0 = time.perf_counter()
    outcomes, reasons, crashes, slowest = fuzz(codec, seeds, args.count, args.seed, args.limit)
    wall = time.perf_counter() - t0
    print(f"model {args.model}, {len(seeds)} seed files, {args.count} mutants in {wall:.0f} s")
    for k in ("decoded", "refused", "crash", "slow"):
        print(f"  {k:<8} {outcomes[k]}")
    print(f"  slowest decode {slowest * 1000:.0f} ms")
    print("refusals by reason:")
    for why, n in reasons.most_common():
        print(f"  {n:6d}  {why}")
    for c in crashes:
        print("CRASH", c)
    hand = run_crafted(codec, crafted(seeds))
    bad = {k: v for k, v in hand.items() if not v[0].startswith("refused")}
    slowest_crafted = max(t for _, t in hand.values())
    print(
        f"crafted headers: {len(hand)} files, {len(hand) - len(bad)} refused, "
        f"{len(bad)} not refused, slowest {slowest_crafted * 1000:.0f} ms"
    )
    for k, (outcome, t) in bad.items():
        print(f"  NOT REFUSED {k}: {outcome[:100]} ({t:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "model": args.model,
                    "count": args.count,
                    "outcomes": dict(outcomes),
                    "reasons": dict(reasons),
                    "crashes": crashes,
                    "slowest_s": slowest,
                    "wall_s": wall,
                    "crafted": {k: [o[:120], t] for k, (o, t) in hand.items()},
                },
                f,
                indent=2,
            )
    sys.exit(1 if outcomes["crash"] or outcomes["slow"] or bad or slowest_crafted > 1 else 0)


if __name__ == "__main__":
    main()

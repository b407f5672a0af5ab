"""Speed of the trellis search and of whole-image tcq coding against sq.

    python benchmarks/tcq_speed.py [--model q3] [--images 6] [--threads 2]

1. The search alone on a Kodak-sized latent (M x 32 x 48, M of the model, real latents of
   kodim01): the vectorized NumPy search against the plain-loop reference in pure Python
   and the same loop compiled with Numba (``pip install numba``; benchmark only).
2. Whole images (Kodak): encode and decode per image with sq and with tcq, medians and
   ratios, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from qaft.runtime import codec as C
from qaft.runtime.image import load_rgb
from qaft.runtime.quantizers import QUANTIZERS
from qaft.runtime.quantizers import trellis as T
from qaft.runtime.quantizers.reference import viterbi_reference
from qaft.runtime.tools.rate_distortion import default_images
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import load_model
from qaft.training.zoo import DEFAULT_MODEL, model_path


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def search_inputs(codec, image, quantizer: str):
    lat = C.latents(codec, image)
    y, scale_ids, means = lat.y, lat.scale_ids, lat.means
    params = codec.model.params(quantizer)
    tset, bits = QUANTIZERS[quantizer].tables_for(codec.model.tables, params.delta)
    u = ((y - means).astype(np.float64) / params.delta).reshape(-1, y.shape[-1])
    sid = scale_ids.reshape(-1, y.shape[-1]).astype(np.int64)
    w = codec.model.distortion_weights
    scale = params.delta * (
        np.ones_like(u) if w is None else np.sqrt(np.broadcast_to(w, y.shape)).reshape(u.shape)
    )
    return y.shape, u, sid, scale, params, tset, bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ckpt")
    trellises = [n for n, q in QUANTIZERS.items() if hasattr(q, "machine")]
    ap.add_argument("--quantizer", default="tcq", choices=trellises)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.ckpt or model_path(args.model))
    codec = codec_from_loaded(loaded)
    kodak = Path(default_images() or "")
    files = sorted(kodak.glob("*.png"))[: args.images]
    if not files:
        raise SystemExit("needs ../shared/data/kodak")
    machine = QUANTIZERS[args.quantizer].machine

    shape, u, sid, scale, params, tset, bits = search_inputs(
        codec, load_rgb(files[0]), args.quantizer
    )
    n_scales = len(codec.model.tables.scale_table)
    print(
        f"model {args.ckpt or args.model}, {args.quantizer}, latent {shape[1:]}, "
        f"{u.shape[0]} trellises of {u.shape[1]} steps, torch threads {args.threads}"
    )

    def vectorized():
        cost, index = T.parity_costs(u, sid, scale, params.rdo_lambda, tset, bits, n_scales)
        return T.viterbi(cost, index, machine)

    ref_args = (
        machine.next.astype(np.int64),
        machine.quantizer.astype(np.int64),
        tset.offsets.astype(np.int64),
        tset.lengths.astype(np.int64),
        tset.pmfs,
        n_scales,
        T.ESCAPE_EXTRA_BITS,
    )
    t_vec = median_time(vectorized, args.repeat)
    k_vec = vectorized()
    rows = [("vectorized NumPy", t_vec)]
    t0 = time.perf_counter()
    k_py = viterbi_reference(u, sid, scale, params.rdo_lambda, *ref_args)
    rows.append(("plain loop, pure Python (1 run)", time.perf_counter() - t0))
    assert np.array_equal(k_py, k_vec), "reference and vectorized search disagree"
    try:
        import numba

        from qaft.runtime.quantizers import reference

        # The reference's helpers must be compiled too for Numba to call them.
        reference._rec = numba.njit(reference._rec)
        reference._bits = numba.njit(reference._bits)
        jitted = numba.njit(reference.viterbi_reference)
        lam = params.rdo_lambda
        jitted(u[:2], sid[:2], scale[:2], lam, *ref_args)  # compile
        t_nb = median_time(lambda: jitted(u, sid, scale, lam, *ref_args), args.repeat)
        assert np.array_equal(jitted(u, sid, scale, lam, *ref_args), k_vec)
        rows.append((f"plain loop, Numba {numba.__version__}", t_nb))
    except ImportError:
        rows.append(("plain loop, Numba (not installed)", float("nan")))
    print(f"\n{'search on one latent':<34}{'median ms':>10}{'vs vectorized':>15}")
    for name, t in rows:
        print(f"{name:<34}{t * 1e3:>10.1f}{t / t_vec:>14.2f}x")

    print(
        f"\n{'per image (Kodak)':<20}{'sq enc':>8}{'tcq enc':>9}{'ratio':>7}"
        f"{'sq dec':>8}{'tcq dec':>9}{'ratio':>7}   (ms, medians of {args.repeat})"
    )
    enc_r, dec_r = [], []
    for f in files:
        img = load_rgb(f)
        data = {q: C.encode(codec, img, q).data for q in ("sq", args.quantizer)}
        te = {
            q: median_time(lambda q=q, img=img: C.encode(codec, img, q), args.repeat) for q in data
        }
        td = {q: median_time(lambda q=q, d=data: C.decode(codec, d[q]), args.repeat) for q in data}
        er, dr = te[args.quantizer] / te["sq"], td[args.quantizer] / td["sq"]
        enc_r.append(er)
        dec_r.append(dr)
        print(
            f"{f.name:<20}{te['sq'] * 1e3:>8.0f}{te[args.quantizer] * 1e3:>9.0f}{er:>7.2f}"
            f"{td['sq'] * 1e3:>8.0f}{td[args.quantizer] * 1e3:>9.0f}{dr:>7.2f}"
        )
    print(
        f"{'median ratio':<20}{'':>17}{statistics.median(enc_r):>7.2f}{'':>17}"
        f"{statistics.median(dec_r):>7.2f}"
    )


if __name__ == "__main__":
    main()

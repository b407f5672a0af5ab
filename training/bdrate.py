"""Bjøntegaard-delta rate between two results files (CompressAI's JSON layout)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import bjontegaard
import numpy as np

from qaft.runtime.errors import QaftError


def load_curve(path: str | Path, models: list[str] | None = None) -> dict:
    """Reads a results JSON (ours or CompressAI's published files) as ``{metric: [...]}``;
    ``models`` keeps only the points of those models (qaft's files name each point's model
    under ``models``, by ``name`` or by ``label``), e.g. to compare a zoo with a curve of
    fewer rates."""
    try:
        blob = json.loads(Path(path).read_text())
        res = blob["results"]
        curve = {
            "name": blob.get("name", Path(path).stem),
            "bpp": list(res["bpp"]),
            "psnr-rgb": list(res.get("psnr-rgb", res.get("psnr", []))),
        }
        if "ms-ssim" in res:
            curve["ms-ssim"] = list(res["ms-ssim"])
        names = [m.get("name", m.get("label")) for m in blob.get("models", [])]
        if len(names) == len(curve["bpp"]):
            curve["labels"] = names
        if models is not None:
            if "models" not in blob:
                raise KeyError("models")
            missing = sorted(set(models) - set(names))
            if missing:
                raise QaftError(f"{path}: no points of {', '.join(missing)}")
            keep = [i for i, n in enumerate(names) if n in models]
            curve = {k: v if k == "name" else [v[i] for i in keep] for k, v in curve.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise QaftError(f"{path}: not a results JSON ({exc})") from None
    return curve


def _sorted_points(rate: list[float], dist: list[float]) -> tuple[list[float], list[float]]:
    pts = sorted((r, d) for r, d in zip(rate, dist) if math.isfinite(d))
    return [p[0] for p in pts], [p[1] for p in pts]


def bd_rate(anchor: dict, test: dict, metric: str = "psnr-rgb") -> float:
    """BD-rate in percent of ``test`` against ``anchor`` (negative: test saves rate)."""
    ra, da = _sorted_points(anchor["bpp"], anchor[metric])
    rt, dt = _sorted_points(test["bpp"], test[metric])
    if len(ra) < 4 or len(rt) < 4:
        raise QaftError(
            f"BD-rate needs at least four points per curve "
            f"(anchor has {len(ra)}, test has {len(rt)})"
        )
    if metric == "ms-ssim":  # in dB, as is customary, so the curves are near linear
        da = [-10 * math.log10(1 - d) for d in da]
        dt = [-10 * math.log10(1 - d) for d in dt]
    return float(
        bjontegaard.bd_rate(
            ra, da, rt, dt, method="akima", require_matching_points=False, min_overlap=0.0
        )
    )


def rate_differences(anchor: dict, test: dict, metric: str = "psnr-rgb") -> list[dict]:
    """Per point of ``test``: the rate the ``anchor`` curve needs for the same quality
    (Akima in log-rate against quality, as the BD-rate integrates) and the point's rate
    difference to it in percent (negative: the point saves rate); ``None`` outside the
    anchor's quality range, where no curve can say."""
    from scipy.interpolate import Akima1DInterpolator

    ra, da = _sorted_points(anchor["bpp"], anchor[metric])
    qa: list[float] = []
    la: list[float] = []
    for q, r in sorted(zip(da, ra)):  # by quality, which must rise strictly
        if not qa or q > qa[-1]:
            qa.append(q)
            la.append(math.log(r))
    if len(qa) < 2:
        raise QaftError(f"the anchor curve has {len(qa)} distinct points; it needs two")
    # Akima needs three points; two give a straight line in log-rate
    curve = Akima1DInterpolator(qa, la) if len(qa) > 2 else lambda q: np.interp(q, qa, la)
    labels = test.get("labels") or [None] * len(test["bpp"])
    out = []
    for label, rate, q in zip(labels, test["bpp"], test[metric]):
        ref = None
        if math.isfinite(q) and qa[0] <= q <= qa[-1]:
            ref = math.exp(float(curve(q)))
        out.append(
            {
                "model": label,
                "bpp": rate,
                metric: q,
                "anchor_bpp": ref,
                "rate_difference": None if ref is None else 100.0 * (rate / ref - 1.0),
            }
        )
    return out


def bd_sensitivity(
    anchor: dict, test: dict, percent: float, metric: str = "psnr-rgb"
) -> list[float | None]:
    """Per point of ``test``: the BD-rate against ``anchor`` if that point alone coded with
    ``percent`` % less rate at the same quality. It says which rate to train next: a point
    weighs by the stretch of the quality range its neighbours give it, not by how far it
    lies from the anchor. ``None`` where the lower rate would fall below the point beneath it
    (no curve through the points)."""
    out: list[float | None] = []
    for i in range(len(test["bpp"])):
        moved = {**test, "bpp": list(test["bpp"])}
        moved["bpp"][i] *= 1.0 - percent / 100.0
        try:
            out.append(bd_rate(anchor, moved, metric))
        except ValueError:
            out.append(None)
    return out

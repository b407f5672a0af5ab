"""Rate control (:mod:`qaft.runtime.rate_control`) on the bundled q0 and q1, torch-free."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import synthetic_image

from qaft.runtime import codec as C
from qaft.runtime import container
from qaft.runtime.metrics import psnr
from qaft.runtime.quantizers import QuantizerParams
from qaft.runtime.rate_control import (
    MAX_TRIALS,
    STEP_SPAN,
    Candidate,
    RateControlError,
    encode_to_target,
    knob_grid,
    zoo_candidates,
)
from qaft.runtime.zoo import find_by_fingerprint

SHAPE = (96, 128)


class CountingAnalysis:
    """Wraps a codec's networks to count the analyses run."""

    def __init__(self, networks):
        self.inner, self.calls = networks, 0

    def analysis(self, x):
        self.calls += 1
        return self.inner.analysis(x)

    def synthesis(self, y_hat):
        return self.inner.synthesis(y_hat)


@pytest.fixture(scope="module")
def candidates() -> list[Candidate]:
    return zoo_candidates("tcq", ["q0", "q1"], threads=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_image(*SHAPE, seed=3)


def bpp_of(data: bytes) -> float:
    return 8 * len(data) / (SHAPE[0] * SHAPE[1])


def default_point(cand: Candidate, image: np.ndarray) -> tuple[float, float]:
    enc = C.encode(cand.codec, image, cand.quantizer, cand.params, reconstruct=True)
    return bpp_of(enc.data), psnr(enc.reconstruction, image)


def check_file(result, image: np.ndarray, candidates: list[Candidate]) -> None:
    """The bytes are an ordinary file: the header names the model and the step, and any
    decoder outputs the reconstruction the result reports."""
    header = C.read_header(result.data)
    cand = next(c for c in candidates if c.name == result.model)
    assert header.fingerprint == cand.codec.model.fingerprint
    assert find_by_fingerprint(header.fingerprint).name == result.model
    assert header.step == np.float32(result.params.delta)
    decoded = C.decode(cand.codec, result.data)
    np.testing.assert_array_equal(decoded.image, result.reconstruction)
    assert result.psnr == pytest.approx(psnr(decoded.image, image))
    assert result.bpp == bpp_of(result.data)


@pytest.mark.parametrize(
    "quantizer,params", [("tcq", QuantizerParams(0.9, 0.1)), ("rdoq", QuantizerParams(1.0, 0.5))]
)
def test_coding_one_analysis_again_with_its_z_gives_the_bytes_of_encode(
    candidates, image, quantizer, params
):
    """What the search does (latents once, z coded once, settings tried) writes what a plain
    encode with the chosen settings writes."""
    codec = candidates[1].codec
    want = C.encode(codec, image, quantizer, params, reconstruct=True)
    lat = C.latents(codec, image)
    z = C.code_z(codec, lat)
    C.encode_latents(codec, lat, *SHAPE, quantizer, QuantizerParams(1.3, 0.2), z_sections=z)
    got = C.encode_latents(codec, lat, *SHAPE, quantizer, params, True, z_sections=z)
    assert got.data == want.data
    np.testing.assert_array_equal(got.reconstruction, want.reconstruction)
    assert got.y_hat.shape == got.y_indices.shape


def test_knob_grids():
    kind, grid, i0 = knob_grid("tcq", QuantizerParams(0.7, 0.1))
    steps = [p.delta for p in grid]
    assert kind == "step" and grid[i0] == QuantizerParams(0.7, 0.1)
    assert steps == sorted(steps)  # finest (highest rate) first
    assert steps[0] == pytest.approx(0.7 / STEP_SPAN) and steps[-1] == pytest.approx(
        0.7 * STEP_SPAN
    )
    kind, grid, i0 = knob_grid("rdoq", QuantizerParams(1.0, 0.1))
    assert kind == "lmbda" and grid[0].rdo_lambda == 0.0 and grid[i0].rdo_lambda == 0.1
    assert knob_grid("sq", QuantizerParams())[1] == [QuantizerParams()]


def test_bpp_target_in_range(candidates, image):
    (b0, _), (b1, _) = (default_point(c, image) for c in candidates)
    for target in (math.sqrt(b0 * b1), 0.85 * b0, 1.2 * b1):
        r = encode_to_target(image, candidates, target_bpp=target)
        assert r.met and r.out_of_range is None, (target, r.history)
        assert abs(r.bpp / target - 1) <= 0.05
        assert r.trials <= MAX_TRIALS and r.analyses <= len(candidates)
        check_file(r, image, candidates)


def test_bpp_target_out_of_range(candidates, image):
    low = encode_to_target(image, candidates, target_bpp=0.01)
    assert low.out_of_range == "below" and not low.met
    assert low.model == "q0" and low.params.delta == pytest.approx(
        candidates[0].params.delta * STEP_SPAN
    )
    high = encode_to_target(image, candidates, target_bpp=8.0)
    assert high.out_of_range == "above" and not high.met
    assert high.model == "q1" and high.params.delta == pytest.approx(
        candidates[1].params.delta / STEP_SPAN
    )
    assert high.bpp > low.bpp
    for r in (low, high):
        check_file(r, image, candidates)


def test_psnr_target(candidates, image):
    (_, p0), (_, p1) = (default_point(c, image) for c in candidates)
    target = (p0 + p1) / 2
    # On so small an image one grid step of Δ moves the PSNR by up to 0.2 dB.
    r = encode_to_target(image, candidates, target_psnr=target, psnr_tolerance=0.3)
    assert r.met and r.out_of_range is None, r.history
    assert target <= r.psnr <= target + 0.3
    # The smallest rate among the tries that reached the target.
    assert r.bpp == min(t.bpp for t in r.history if t.psnr >= target)
    check_file(r, image, candidates)
    assert encode_to_target(image, candidates, target_psnr=60.0).out_of_range == "above"
    low = encode_to_target(image, candidates, target_psnr=5.0)
    assert low.out_of_range == "below" and low.psnr >= 5.0


def test_each_analysis_runs_at_most_once(candidates, image):
    counted = [
        Candidate(
            c.name,
            replace(c.codec, networks=CountingAnalysis(c.codec.networks)),
            c.quantizer,
            c.params,
        )
        for c in candidates
    ]
    for kw in ({"target_bpp": 0.2}, {"target_bpp": 8.0}, {"target_psnr": 27.0}):
        for c in counted:
            c.codec.networks.calls = 0
        r = encode_to_target(image, counted, **kw)
        assert all(c.codec.networks.calls <= 1 for c in counted)
        assert r.analyses == sum(c.codec.networks.calls for c in counted)


@pytest.mark.parametrize("max_trials", [1, 2, 3])
def test_trial_bound(candidates, image, max_trials):
    (b0, _), (b1, _) = (default_point(c, image) for c in candidates)
    r = encode_to_target(image, candidates, target_bpp=0.9 * b0, max_trials=max_trials)
    assert 1 <= r.trials <= max_trials and len(r.history) == r.trials
    check_file(r, image, candidates)


def test_rdoq_and_sq(image):
    rdoq = zoo_candidates("rdoq", ["q0", "q1"], threads=1)
    b1 = default_point(rdoq[1], image)[0]
    r = encode_to_target(image, rdoq, target_bpp=0.93 * b1)
    assert r.met and r.params.delta == 1.0, r.history
    assert container.unpack(r.data)[0].step == 1.0  # λ is the encoder's alone
    check_file(r, image, rdoq)
    sq = zoo_candidates("sq", ["q0", "q1"], threads=1)
    r = encode_to_target(image, sq, target_bpp=100.0)
    assert r.model == "q1" and r.out_of_range == "above" and r.trials <= 2


def test_bad_arguments(candidates, image):
    with pytest.raises(RateControlError):
        encode_to_target(image, candidates)
    with pytest.raises(RateControlError):
        encode_to_target(image, candidates, target_bpp=0.5, target_psnr=30.0)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(RateControlError):
            encode_to_target(image, candidates, target_bpp=bad)
    with pytest.raises(RateControlError):
        encode_to_target(image, [], target_bpp=0.5)
    with pytest.raises(RateControlError):
        encode_to_target(image, candidates, target_bpp=0.5, max_trials=0)
    with pytest.raises(RateControlError):
        encode_to_target(image[..., 0], candidates, target_bpp=0.5)


def test_a_search_without_the_zoo_says_what_it_needs(monkeypatch):
    """`pip install .` alone holds q3: a target search names the models it would use and
    what to install, in one line."""
    import qaft.runtime.zoo as zoo

    real = zoo.model_path

    def model_path(name, *args):
        if name != "q3":
            raise zoo.EXPORTED.not_installed(name)
        return real(name, *args)

    monkeypatch.setattr(zoo, "model_path", model_path)
    with pytest.raises(RateControlError) as exc:
        zoo_candidates("tcq")
    assert str(exc.value).startswith(
        "a target is searched for over the models q0, q1, q2, q3, q4, q5, q6: "
        "model q0 is not installed: `pip install ./zoo`"
    )


def test_rate_control_does_not_import_torch():
    code = "import sys, qaft.runtime.rate_control; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

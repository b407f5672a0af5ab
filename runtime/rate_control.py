"""Per-image rate control: code an image to a target size (bpp) or quality (PSNR).

The zoo's models are points on one rate axis; within a model the quantizer moves the rate
continuously without any format change: ``tcq``/``tcq8`` through the step Δ (written into
the header), ``rdoq`` through λ (encoder only).  :func:`encode_to_target` searches both:

1. **Model.**  Candidates (in increasing rate order) are probed at their measured
   defaults, starting from the one typically nearest the target
   (:attr:`Candidate.typical`: the zoo's Kodak means) or else the middle one; a secant
   over the candidate index (the zoo's typical spacing until two probes give a slope)
   predicts the next, within the bracket the probes so far leave, until the prediction
   is a model already probed.  The probed model whose default lies nearest the target
   is taken: the defaults are the models' best rate-distortion points, so the smaller
   move costs least.  Each probe runs that model's analysis once; its
   :class:`~qaft.runtime.codec.Latents` (and the coded z, which no quantizer setting
   changes) serve every later trial of that model, so an image costs at most one
   analysis per model (one or two in practice).
2. **Knob.**  The chosen model's knob is searched; if its whole range falls short, the
   neighbour in that direction is searched next, and so on to the zoo's end.  The knob
   takes values on a fixed grid (:func:`knob_grid`): Δ on a log grid of
   :data:`STEP_GRID_PER_OCTAVE` points an octave within a factor :data:`STEP_SPAN` of the
   default; λ from 0 to :data:`LMBDA_MAX`; ``sq`` has no knob (the nearest model wins).
   The search is a safeguarded secant (regula falsi on log2 bpp, or on the PSNR, against
   the grid index, bisecting when a bracket stops halving) on real coded sizes.  It stops
   at the first trial within tolerance, which keeps the result as near the model's
   default as the target allows.

Every quantize-and-code is a *trial*; ``max_trials`` (default :data:`MAX_TRIALS`) bounds
them per image.  A bpp target is met within ``±tolerance`` (relative, default 5%); a PSNR
target is met when ``target <= psnr <= target + psnr_tolerance`` (the smallest rate meeting
the target, to within the grid).  A target beyond what the whole zoo reaches is reported in
:attr:`TargetResult.out_of_range` and coded at the nearest end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qaft.runtime import tiling
from qaft.runtime.codec import Codec, Latents, code_z, encode_latents, latents
from qaft.runtime.errors import QaftError
from qaft.runtime.limits import check_memory, size_error, size_ok
from qaft.runtime.metrics import psnr
from qaft.runtime.quantizers import QUANTIZERS, QuantizerParams
from qaft.runtime.quantizers.base import DELTA_RANGE

#: Most trial encodes (quantize + entropy code; with a PSNR target also a synthesis) per
#: image.  On Kodak the search takes 2-4 (1-3 model probes, 0-2 knob steps), so the bound
#: only matters for odd images; reaching it returns the best trial so far.
MAX_TRIALS = 12
#: Relative tolerance of a bpp target.
BPP_TOLERANCE = 0.05
#: How far above a PSNR target (dB) the result may land and still count as met.
PSNR_TOLERANCE_DB = 0.1
#: Δ moves within [default / STEP_SPAN, default * STEP_SPAN]: with the measured defaults
#: (0.6-0.7) that is about [0.3, 1.4], far inside the format's DELTA_RANGE, and it spans
#: about 2.5x in rate per model, more than the <= 1.6x between neighbouring zoo models, so
#: neighbours' ranges overlap.  Farther out, switching model costs less quality.
STEP_SPAN = 2.0
#: Grid points per octave of Δ: one point moves the rate about 1.5%, well inside a 5%
#: tolerance, and a fixed grid keeps the trellis tables reusable across images (the model
#: caches a table set per step).
STEP_GRID_PER_OCTAVE = 32
#: rdoq's λ runs from 0 (plain rounding, the highest rate) up to this; beyond it the rate
#: hardly moves on high-rate models while the PSNR keeps dropping.
LMBDA_MAX = 4.0
#: Grid points per octave of λ (from 0.01 up to LMBDA_MAX).
LMBDA_GRID_PER_OCTAVE = 8
_LMBDA_MIN = 0.01
#: Expected change per grid point toward coarser settings, of log2(bpp) and of the PSNR
#: (dB), before two points of the image are known (measured on Kodak q0-q6: bpp ~ Δ^-0.75).
_PRIOR_SLOPE = {
    "bpp": {"step": -0.75 / STEP_GRID_PER_OCTAVE, "lmbda": -0.01, "none": -0.02},
    "psnr": {"step": -0.05, "lmbda": -0.04, "none": -0.05},
}
#: Typical change from one zoo model to the next at the defaults, of log2(bpp) (False) and
#: of the PSNR in dB (True): Kodak averages of q0..q6.
_MODEL_SLOPE = {False: 0.49, True: 1.0}


class RateControlError(QaftError):
    """Bad arguments to the rate control (no candidates, no or two targets, …)."""


@dataclass(frozen=True)
class Candidate:
    """A model the rate control may choose: ``codec`` coded with ``quantizer``, at
    ``params`` by default (the knob grid is centred there)."""

    name: str
    codec: Codec
    quantizer: str
    params: QuantizerParams
    #: Typical (bpp, PSNR) of the model, e.g. its Kodak means (the zoo index has them):
    #: only where the search starts, so an estimate does; None starts in the middle.
    typical: tuple[float, float] | None = None


@dataclass
class Trial:
    """One trial encode of the search."""

    model: str
    params: QuantizerParams
    bpp: float
    psnr: float | None  # only where the trial was synthesized (PSNR targets)


@dataclass
class TargetResult:
    """The chosen encode.  ``data`` is an ordinary ``.qaft`` file (the header names the
    model and the step).  ``met``: the target was reached within its tolerance;
    ``out_of_range``: ``"below"`` / ``"above"`` when the target lies below the lowest or
    above the highest rate (or PSNR) the candidates reach, ``None`` otherwise."""

    data: bytes
    model: str
    quantizer: str
    params: QuantizerParams
    bpp: float  # 8 * len(data) / (H * W)
    psnr: float  # of the encoder-side reconstruction against the input (8-bit RGB)
    reconstruction: np.ndarray  # what any decoder of ``data`` outputs
    met: bool
    out_of_range: str | None
    trials: int
    analyses: int
    history: list[Trial] = field(default_factory=list)


def knob_grid(quantizer: str, default: QuantizerParams) -> tuple[str, list[QuantizerParams], int]:
    """(knob name, settings ordered from the highest rate to the lowest, index of
    ``default``) for ``quantizer``: Δ for tcq/tcq8, λ for rdoq, none for sq."""
    quant = QUANTIZERS[quantizer]
    if quant.uses_delta:
        n = round(math.log2(STEP_SPAN) * STEP_GRID_PER_OCTAVE)
        grid = [
            QuantizerParams(s, default.rdo_lambda)
            for i in range(-n, n + 1)
            if DELTA_RANGE[0]
            <= (s := default.delta * 2.0 ** (i / STEP_GRID_PER_OCTAVE))
            <= DELTA_RANGE[1]
        ]
        return "step", grid, grid.index(default) if default in grid else len(grid) // 2
    if quantizer == "rdoq":
        n = math.floor(math.log2(LMBDA_MAX / _LMBDA_MIN) * LMBDA_GRID_PER_OCTAVE)
        lmbdas = {0.0, default.rdo_lambda, LMBDA_MAX}
        lmbdas.update(_LMBDA_MIN * 2.0 ** (j / LMBDA_GRID_PER_OCTAVE) for j in range(n + 1))
        grid = [QuantizerParams(default.delta, v) for v in sorted(lmbdas)]
        return "lmbda", grid, grid.index(default)
    return "none", [default], 0


def zoo_candidates(
    quantizer: str = "tcq",
    models: Sequence[str] | None = None,
    backend: str = "cpu",
    threads: int = 0,
    precision: str = "fp32",
) -> list[Candidate]:
    """Candidates for the bundled models, in increasing rate order: the stage-1 models
    q0..q6 unless ``models`` names others (in the order given, which must be increasing
    rate), each with its measured defaults for ``quantizer``."""
    # Imported here: the ONNX Runtime backend is only needed when the zoo is opened.
    from qaft.runtime.backends.onnx import onnx_codec
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import ModelNotInstalledError, list_models, model_path

    if quantizer not in QUANTIZERS:
        raise RateControlError(f"unknown quantizer {quantizer!r}; choose from {sorted(QUANTIZERS)}")
    entries = {e["name"]: e for e in list_models()}
    if models is None:
        models = [name for name, e in entries.items() if e["stage"] == 1]
    out = []
    for name in models:
        try:
            path = model_path(name)
        except ModelNotInstalledError as exc:  # `pip install .` alone: q3 is no search
            raise RateControlError(
                f"a target is searched for over the models {', '.join(models)}: {exc}"
            ) from None
        codec = onnx_codec(open_model_dir(path), backend, threads, precision)
        kodak = entries.get(name, {}).get("kodak") or {}
        typical = (kodak["bpp"], kodak["psnr"]) if {"bpp", "psnr"} <= kodak.keys() else None
        out.append(Candidate(name, codec, quantizer, codec.model.params(quantizer), typical))
    return out


class _Budget(Exception):
    """The trial bound was reached: the search returns its best so far."""


@dataclass
class _Coded:
    """A trial's file, and (while it is the best so far) what a reconstruction needs."""

    data: bytes
    trial: Trial
    y_hat: np.ndarray | None
    reconstruction: np.ndarray | None


class _Search:
    """The state of one image's search: latents per model, trials and the best so far."""

    def __init__(
        self,
        image: np.ndarray,
        candidates: Sequence[Candidate],
        max_trials: int,
        with_psnr: bool,
        better: Callable[[Trial, Trial], bool],
    ):
        self.image = image
        self.h, self.w = image.shape[:2]
        self.candidates = candidates
        self.max_trials = max_trials
        self.with_psnr = with_psnr
        self.better = better
        self.latents: dict[int, tuple[Latents, list[bytes]]] = {}
        self.grids = [knob_grid(c.quantizer, c.params) for c in candidates]
        self.results: dict[tuple[int, int], _Coded] = {}
        self.best: tuple[int, int] | None = None
        self.analyses = 0

    def trial(self, k: int, i: int) -> Trial:
        """Codes with candidate ``k`` at knob index ``i`` (once; repeats are free)."""
        if (k, i) in self.results:
            return self.results[(k, i)].trial
        if len(self.results) >= self.max_trials:
            raise _Budget
        cand = self.candidates[k]
        if k not in self.latents:
            lat = latents(cand.codec, self.image)
            self.latents[k] = (lat, code_z(cand.codec, lat))
            self.analyses += 1
        lat, z_sections = self.latents[k]
        params = self.grids[k][1][i]
        enc = encode_latents(
            cand.codec, lat, self.h, self.w, cand.quantizer, params, self.with_psnr, z_sections
        )
        y_hat = enc.y_hat
        quality = psnr(enc.reconstruction, self.image) if self.with_psnr else None
        t = Trial(cand.name, params, 8 * len(enc.data) / (self.h * self.w), quality)
        self.results[(k, i)] = _Coded(enc.data, t, y_hat, enc.reconstruction)
        # Only the best so far keeps its ŷ and image (each as large as the image's
        # latent or the image itself): the rest keep their bytes and figures.
        if self.best is None or self.better(t, self.results[self.best].trial):
            if self.best is not None:
                self.results[self.best].y_hat = self.results[self.best].reconstruction = None
            self.best = (k, i)
        else:
            self.results[(k, i)].y_hat = self.results[(k, i)].reconstruction = None
        return t

    def drop_latents(self, keep: set[int]) -> None:
        """Frees the latents of models the search will not code again."""
        for k in list(self.latents):
            if k not in keep:
                del self.latents[k]


def _next_index(
    known: dict[int, float], goal: float, lo: int, hi: int, slope: float, bisect: bool
) -> int | None:
    """The next grid index to try, or None when no untried index can do better.

    ``known`` maps tried indices to their value, which decreases with the index (log rate
    or PSNR as the knob coarsens); ``goal`` is the value wanted."""
    above = [i for i, v in known.items() if v >= goal]
    below = [i for i, v in known.items() if v < goal]
    a = max(above) if above else None  # finest-known too high
    b = min(below) if below else None  # coarsest-known too low
    if a is not None and b is not None:
        if b - a <= 1:
            return None  # bracketed between neighbouring grid points
        if bisect:
            return (a + b) // 2
        va, vb = known[a], known[b]
        guess = a + (goal - va) / (vb - va) * (b - a) if va != vb else (a + b) / 2
        return int(min(max(round(guess), a + 1), b - 1))
    # One-sided: extrapolate with the secant through the two nearest points when there
    # are two, else the prior slope; clamp to the grid's end (reaching it tells whether
    # the target is reachable at all).
    near = a if b is None else b
    pts = sorted(known, key=lambda i: abs(i - near))[:2]
    if len(pts) == 2 and known[pts[0]] != known[pts[1]]:
        slope = (known[pts[0]] - known[pts[1]]) / (pts[0] - pts[1])
        slope = min(slope, -1e-6)  # noise must not point the step the wrong way
    guess = near + (goal - known[near]) / slope
    if b is None:  # everything tried is too high: coarser
        return None if near >= hi else int(min(max(math.ceil(guess), near + 1), hi))
    return None if near <= lo else int(max(min(math.floor(guess), near - 1), lo))


def _search_knob(
    s: _Search,
    k: int,
    value: Callable[[Trial], float],
    goal: float,
    ok: Callable[[Trial], bool],
    slopes: dict[str, float],
) -> int:
    """Searches candidate ``k``'s knob for a trial that satisfies ``ok``.  Returns 0 when
    one does or when the goal falls between two neighbouring grid points (no other model
    needed), +1 when the finest setting is still below the goal (a higher-rate model may
    reach it), -1 when the coarsest is still above."""
    kind, grid, i0 = s.grids[k]
    known = {i: value(r.trial) for (kk, i), r in s.results.items() if kk == k}
    if i0 not in known:
        known[i0] = value(s.trial(k, i0))
    width_before = None
    bisect = False
    while not any(ok(s.results[(k, i)].trial) for i in known):
        i = _next_index(known, goal, 0, len(grid) - 1, slopes[kind], bisect)
        if i is None:
            if all(v < goal for v in known.values()):
                return 1
            return -1 if all(v >= goal for v in known.values()) else 0
        known[i] = value(s.trial(k, i))
        # Regula falsi can creep from one side; when a bracket shrinks by less than half,
        # the next step bisects.
        above = [j for j, v in known.items() if v >= goal]
        below = [j for j, v in known.items() if v < goal]
        if above and below:
            width = min(below) - max(above)
            bisect = width_before is not None and width > width_before / 2
            width_before = width
    return 0


def _pick_model(
    s: _Search, value: Callable[[Trial], float], goal: float, ok: Callable[[Trial], bool]
) -> int | None:
    """Probes candidates at their defaults, a secant over the candidate index (the value
    grows with it), and returns the probed one whose default lies nearest the goal, or
    None when a probe already meets the target."""
    n = len(s.candidates)
    probed: dict[int, float] = {}
    m = n // 2
    if all(c.typical for c in s.candidates):
        # Start at the model typically nearest the goal: one analysis fewer on most images.
        typical = [c.typical[1] if s.with_psnr else math.log2(c.typical[0]) for c in s.candidates]
        m = min(range(n), key=lambda k: abs(typical[k] - goal))
    while True:
        t = s.trial(m, s.grids[m][2])
        if ok(t):
            return None
        probed[m] = value(t)
        above = [k for k, v in probed.items() if v >= goal]
        below = [k for k, v in probed.items() if v < goal]
        lo = max(below) + 1 if below else 0
        hi = min(above) - 1 if above else n - 1
        if lo > hi:
            break  # neighbours bracket the goal
        # The slope between the two probes nearest m, else the zoo's typical spacing.
        slope = _MODEL_SLOPE[s.with_psnr]
        near = sorted(probed, key=lambda k: abs(k - m))[:2]
        if len(near) == 2 and probed[near[0]] != probed[near[1]]:
            slope = max((probed[near[0]] - probed[near[1]]) / (near[0] - near[1]), 1e-6)
        guess = round(m + (goal - probed[m]) / slope)
        if guess == m:
            break  # m is the nearest model: its knob covers the rest
        m = min(max(guess, lo), hi)
    return min(probed, key=lambda k: abs(probed[k] - goal))


def encode_to_target(
    image: np.ndarray,
    candidates: Sequence[Candidate],
    *,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    tolerance: float = BPP_TOLERANCE,
    psnr_tolerance: float = PSNR_TOLERANCE_DB,
    max_trials: int = MAX_TRIALS,
) -> TargetResult:
    """Codes an (H, W, 3) uint8 image at ``target_bpp`` (within ±``tolerance``, relative)
    or at the smallest rate whose PSNR reaches ``target_psnr`` (within ``psnr_tolerance``
    dB above it), choosing among ``candidates`` (in increasing rate order) and their knob.

    Runs each candidate's analysis at most once and at most ``max_trials`` trial encodes;
    the result is the best trial found (see the module docstring for the search)."""
    if (target_bpp is None) == (target_psnr is None):
        raise RateControlError("give exactly one of target_bpp and target_psnr")
    target = target_bpp if target_bpp is not None else target_psnr
    try:
        target = float(target)
    except (TypeError, ValueError):
        raise RateControlError(f"the target must be a number, not {target!r}") from None
    if not (math.isfinite(target) and target > 0):
        raise RateControlError(f"the target must be a positive number, not {target!r}")
    if not candidates:
        raise RateControlError("no candidate models to choose from")
    if not (isinstance(max_trials, int) and max_trials >= 1):
        raise RateControlError(f"max_trials must be a positive integer, not {max_trials!r}")
    for c in candidates:
        if c.quantizer not in QUANTIZERS:
            raise RateControlError(f"{c.name}: unknown quantizer {c.quantizer!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise RateControlError(
            f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    h, w = image.shape[:2]
    if not size_ok(h, w):
        raise RateControlError(size_error(h, w))
    check_memory(h, w, "search")

    by_psnr = target_psnr is not None
    if by_psnr:
        goal = target

        def value(t: Trial) -> float:
            return t.psnr

        def ok(t: Trial) -> bool:
            return goal <= t.psnr <= goal + psnr_tolerance

        def better(t: Trial, old: Trial) -> bool:
            # The smallest rate that reaches the target; while none does, the highest PSNR.
            if (t.psnr >= goal) != (old.psnr >= goal):
                return t.psnr >= goal
            return t.bpp < old.bpp if t.psnr >= goal else t.psnr > old.psnr
    else:
        goal = math.log2(target)

        def value(t: Trial) -> float:
            return math.log2(t.bpp)

        def ok(t: Trial) -> bool:
            return abs(t.bpp / target - 1) <= tolerance

        def better(t: Trial, old: Trial) -> bool:
            return abs(math.log2(t.bpp) - goal) < abs(math.log2(old.bpp) - goal)

    s = _Search(image, candidates, max_trials, by_psnr, better)
    slopes = _PRIOR_SLOPE["psnr" if by_psnr else "bpp"]
    n = len(candidates)
    try:
        # 1. The model whose default lies nearest the goal; 2. its knob, then the
        # neighbours' in the direction its range fell short, as long as that helps.
        m = _pick_model(s, value, goal, ok)
        searched: set[int] = set()
        while m is not None and 0 <= m < n and m not in searched:
            s.drop_latents({m})
            searched.add(m)
            direction = _search_knob(s, m, value, goal, ok, slopes)
            m = m + direction if direction else None
    except _Budget:
        pass

    k, i = s.best
    best = s.results[s.best]
    t, cand = best.trial, candidates[k]
    rec = best.reconstruction
    if rec is None:
        rec = tiling.synthesize(cand.codec.networks.synthesis, best.y_hat, h, w)
    s.latents.clear()

    # Out of range: the end of the whole zoo was tried and still falls short.
    out_of_range = None
    low_end, high_end = (0, len(s.grids[0][1]) - 1), (n - 1, 0)
    if not ok(t):
        if low_end in s.results and value(s.results[low_end].trial) > goal:
            out_of_range = "below"
        elif high_end in s.results and value(s.results[high_end].trial) < goal:
            out_of_range = "above"
    return TargetResult(
        data=best.data,
        model=cand.name,
        quantizer=cand.quantizer,
        params=t.params,
        bpp=t.bpp,
        psnr=psnr(rec, image),
        reconstruction=rec,
        met=ok(t),
        out_of_range=out_of_range,
        trials=len(s.results),
        analyses=s.analyses,
        history=[r.trial for r in s.results.values()],
    )

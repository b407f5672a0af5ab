"""Warm start of a wider network (larger N and M) from a trained narrower one.

Function-preserving, in the spirit of Net2Net (Chen et al. 2016): the trained weights are
copied into the leading channels, every channel the small model did not have starts
*exactly zero* (zero weights and biases into it), and the weights out of those channels get
their fresh random initialization. At the start the wide model therefore reconstructs every
image exactly as the narrow one did, and since a zero channel still passes gradient (GDN and
leaky ReLU have slope > 0 at zero, and the weights out of it are random), training grows the
new channels from there instead of from scratch.

Two places need more than that:

* ``h_s``'s last layer lays out [scales (M) | means (M)]: the old means move from channel
  ``m`` to channel ``M``. The new latent channels get scale 0 (clamped to the smallest scale
  level) and mean 0, so their all-zero values cost almost nothing to code.
* the factorized prior of ``z``: new channels get a fresh, narrow density centred at 0 (the
  value they hold), so the rate starts close to the small model's.
"""

from __future__ import annotations

import torch
from torch import nn

from qaft.runtime.errors import ConfigError
from qaft.training.entropy_models import EntropyBottleneck
from qaft.training.layers import GDN
from qaft.training.models import MeanScaleHyperprior, ModelConfig

# The density of a new z channel: narrow (about 1 bit for its zeros) rather than the
# default init's spread of +-10, which would cost about 4 bits per element at first.
NEW_Z_INIT_SCALE = 0.3


def _index(old: int, new: int, halves: bool = False) -> torch.Tensor:
    """Where the old channels go among the new ones (two stacked halves when ``halves``)."""
    if not halves:
        return torch.arange(old)
    return torch.cat([torch.arange(old // 2), new // 2 + torch.arange(old // 2)])


@torch.no_grad()
def _widen_conv(small: nn.Module, big: nn.Module, halves_out: bool = False) -> None:
    # Conv2d weights are (out, in, k, k); ConvTranspose2d's are (in, out, k, k).
    transposed = isinstance(big, nn.ConvTranspose2d)
    w_small, w_big = small.weight, big.weight
    o_dim, i_dim = (1, 0) if transposed else (0, 1)
    out_idx = _index(w_small.shape[o_dim], w_big.shape[o_dim], halves_out)
    in_idx = _index(w_small.shape[i_dim], w_big.shape[i_dim])
    new_out = torch.ones(w_big.shape[o_dim], dtype=torch.bool)
    new_out[out_idx] = False
    # channels that are new start at exactly zero; weights *from* new inputs stay random
    w_big.index_fill_(o_dim, new_out.nonzero().flatten(), 0.0)
    big.bias[new_out] = 0.0
    big.bias[out_idx] = small.bias
    block = w_big.index_select(o_dim, out_idx)
    block.index_copy_(i_dim, in_idx, w_small)
    w_big.index_copy_(o_dim, out_idx, block)


@torch.no_grad()
def _widen_gdn(small: GDN, big: GDN) -> None:
    c = small.beta.shape[0]
    big.beta[:c] = small.beta
    big.gamma[:c, :c] = small.gamma


@torch.no_grad()
def _widen_bottleneck(small: EntropyBottleneck, big: EntropyBottleneck) -> None:
    c = small.channels
    fresh = EntropyBottleneck(big.channels - c, init_scale=NEW_Z_INIT_SCALE, filters=big.filters)
    for name in ("matrices", "biases", "factors"):
        for p_big, p_small, p_new in zip(
            getattr(big, name), getattr(small, name), getattr(fresh, name), strict=True
        ):
            p_big[:c] = p_small
            p_big[c:] = p_new
    big.quantiles[:c] = small.quantiles
    big.quantiles[c:] = fresh.quantiles


def widen(small: MeanScaleHyperprior, config: ModelConfig, seed: int = 0) -> MeanScaleHyperprior:
    """A ``config``-sized model that computes what ``small`` computes (see the module doc).

    ``config`` must be at least as wide as ``small`` in N and M; ``seed`` draws the random
    weights out of the new channels. Calibration is not carried over: it fits the trained
    model, and a widened model is meant to be trained further.
    """
    if small.config.architecture != "mean-scale-hyperprior":
        raise ConfigError(f"--widen takes a mean-scale hyperprior, not {small.config.architecture}")
    if config.architecture != small.config.architecture:
        raise ConfigError(f"cannot widen {small.config.architecture} into {config.architecture}")
    if config.N < small.config.N or config.M < small.config.M:
        raise ConfigError(
            f"cannot widen N={small.config.N}, M={small.config.M} into narrower "
            f"N={config.N}, M={config.M}"
        )
    if small.config.M % 2 or config.M % 2:
        raise ConfigError("widening needs even M (h_s has 3M/2 channels)")
    devices = {p.device for p in small.parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        big = MeanScaleHyperprior(config)  # the only architecture widened (checked above)
    big.to(next(iter(devices)))
    pairs = dict(small.named_modules())
    last_hs = len(big.h_s) - 1
    for name, mod in big.named_modules():
        old = pairs.get(name)
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            _widen_conv(old, mod, halves_out=(name == f"h_s.{last_hs}"))
        elif isinstance(mod, GDN):
            _widen_gdn(old, mod)
        elif isinstance(mod, EntropyBottleneck):
            _widen_bottleneck(old, mod)
    # buffers (scale table, bounds) are the same for every width; the small model's may
    # carry its own scale levels
    big.gaussian_conditional.load_state_dict(small.gaussian_conditional.state_dict())
    return big

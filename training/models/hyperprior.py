"""The hyperprior codecs: mean-scale (Minnen, Ballé, Toderici 2018) without a context model,
and scale-only (Ballé et al. 2018); the transforms every model here shares.

Module and parameter names follow CompressAI's ``MeanScaleHyperprior`` and
``ScaleHyperprior`` so checkpoints move between them (see
:mod:`qaft.training.compressai_import`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from qaft.runtime.entropy.integer_hyper import FloatLayer, IntegerHyperSynthesis, integerize
from qaft.runtime.model_dir import ARCHITECTURE_VERSIONS
from qaft.runtime.model_tables import ModelTables
from qaft.training.entropy_models import EntropyBottleneck, GaussianConditional
from qaft.training.layers import GDN

STAND_INS = ("noise", "ste", "mixed")


#: The architectures a model file may name, by :attr:`ModelConfig.architecture`: those a
#: model folder may hold.
ARCHITECTURES = tuple(ARCHITECTURE_VERSIONS)

#: Widest N or M accepted (CompressAI's largest published models use 320): 1024 already
#: means over 300 M parameters.
MAX_CHANNELS = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a hyperprior model (:func:`build_model` makes it)."""

    N: int = 128
    M: int = 192
    architecture: str = "mean-scale-hyperprior"

    def __post_init__(self) -> None:
        # a file states its architecture: a few bytes must not make qaft allocate gigabytes
        for name in ("N", "M"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_CHANNELS:
                raise ValueError(f"{name} must be an integer from 1 to {MAX_CHANNELS}, not {v!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, not {self.architecture!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=k // 2, output_padding=s - 1)


def transforms(N: int, M: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``g_a`` and ``g_s``: four 5x5 stride-2 (transposed) convolutions with GDN between."""
    g_a = nn.Sequential(_conv(3, N), GDN(N), _conv(N, N), GDN(N), _conv(N, N), GDN(N), _conv(N, M))
    g_s = nn.Sequential(
        _deconv(M, N),
        GDN(N, inverse=True),
        _deconv(N, N),
        GDN(N, inverse=True),
        _deconv(N, N),
        GDN(N, inverse=True),
        _deconv(N, 3),
    )
    return g_a, g_s


def _hyper_analysis(M: int, N: int, activation: type[nn.Module]) -> nn.Sequential:
    """``h_a``: 3x3 from y's M channels, then two 5x5 stride-2 convolutions (CompressAI's)."""
    return nn.Sequential(
        _conv(M, N, 3, 1),
        activation(inplace=True),
        _conv(N, N),
        activation(inplace=True),
        _conv(N, N),
    )


class MeanScaleHyperprior(nn.Module):
    """``g_a``/``g_s`` with GDN, ``h_a``/``h_s`` with leaky ReLU; ``h_s`` predicts the
    scale (first M channels) and the mean (last M channels) of ``y``."""

    downsampling = 64  # g_a (16) times h_a (4): inputs are padded to a multiple

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        self.g_a, self.g_s = transforms(N, M)
        self.h_a = _hyper_analysis(M, N, nn.LeakyReLU)
        self.h_s = nn.Sequential(
            _deconv(N, M),
            nn.LeakyReLU(inplace=True),
            _deconv(M, M * 3 // 2),
            nn.LeakyReLU(inplace=True),
            _conv(M * 3 // 2, M * 2, 3, 1),
        )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional()

    #: Whether ``h_s`` predicts means besides scales (the runtime's integer path must know).
    with_means = True

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        """The hyper-latent ``z`` of ``y``."""
        return self.h_a(y)

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales, means) of ``y`` from the decoded hyper-latent."""
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def integer_hyper_synthesis(self) -> IntegerHyperSynthesis:
        """``h_s`` converted to the runtime's exact integer path (the one that codes)."""
        layers, mods = [], list(self.h_s)
        for i, mod in enumerate(mods):
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                after = mods[i + 1] if i + 1 < len(mods) else None
                activation = "none"
                if isinstance(after, nn.LeakyReLU):
                    if after.negative_slope != 0.01:
                        raise ValueError("the integer path implements a leaky-ReLU slope of 0.01")
                    activation = "leaky"
                elif isinstance(after, nn.ReLU):
                    activation = "relu"
                layers.append(
                    FloatLayer(
                        "deconv" if isinstance(mod, nn.ConvTranspose2d) else "conv",
                        mod.weight.detach().float().cpu().numpy(),
                        mod.bias.detach().float().cpu().numpy(),
                        mod.stride[0],
                        mod.padding[0],
                        activation,
                    )
                )
        return integerize(layers, self.with_means)

    def forward(self, x: torch.Tensor, stand_in: str = "mixed") -> dict[str, torch.Tensor]:
        """Training pass with a differentiable stand-in for quantization.

        ``noise``: additive uniform noise everywhere; ``ste``: rounding with straight-through
        gradients everywhere; ``mixed``: noise for the rate terms, rounded latents (straight
        through) into the decoders.
        """
        if stand_in not in STAND_INS:
            raise ValueError(f"unknown stand-in {stand_in!r}; choose from {STAND_INS}")
        y = self.g_a(x)
        z = self.hyper_analysis(y)
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z = z.float()
        z_hat = eb.quantize(z, "noise" if stand_in == "noise" else "ste")
        z_rate = z + torch.empty_like(z).uniform_(-0.5, 0.5) if stand_in == "mixed" else z_hat
        scales, means = self.hyper_synthesis(z_hat)
        y, scales, means = y.float(), scales.float(), means.float()
        y_hat = gc.quantize(y, means, "noise" if stand_in == "noise" else "ste")
        y_rate = y + torch.empty_like(y).uniform_(-0.5, 0.5) if stand_in == "mixed" else y_hat
        x_hat = self.g_s(y_hat)
        # Likelihoods stay in fp32 even when the networks run under bf16 autocast: rates
        # are sums of many small log-probabilities.
        with torch.autocast(x.device.type, enabled=False):
            return {
                "x_hat": x_hat.float(),
                "y_likelihood": gc.likelihood(y_rate.float(), scales.float(), means.float()),
                "z_likelihood": eb.likelihood(z_rate.float()),
            }

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def build_tables(self) -> ModelTables:
        """Freezes the entropy models into the tables the coder uses."""
        z_tables, z_medians = self.entropy_bottleneck.build_tables()
        return ModelTables(
            z_tables=z_tables,
            z_medians=z_medians,
            y_tables=self.gaussian_conditional.build_tables(),
            scale_table=self.gaussian_conditional.scale_table.double().cpu().numpy().copy(),
            calibration=self.gaussian_conditional.calibration,
        )

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(main parameters, auxiliary ``quantiles``): they use separate optimizers."""
        aux = [self.entropy_bottleneck.quantiles]
        main = [p for n, p in self.named_parameters() if not n.endswith("quantiles")]
        return main, aux


class ScaleHyperprior(MeanScaleHyperprior):
    """The scale-only hyperprior: ``h_a`` reads ``|y|``, ``h_s`` (ReLU throughout, its output
    too) predicts only scales; the means are zero (a mean-scale model whose means vanish)."""

    with_means = False

    def __init__(self, config: ModelConfig = ModelConfig(architecture="scale-hyperprior")):
        super().__init__(config)
        N, M = config.N, config.M
        self.h_a = _hyper_analysis(M, N, nn.ReLU)
        self.h_s = nn.Sequential(
            _deconv(N, N),
            nn.ReLU(inplace=True),
            _deconv(N, N),
            nn.ReLU(inplace=True),
            _conv(N, M, 3, 1),
            nn.ReLU(inplace=True),
        )

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        return self.h_a(torch.abs(y))

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales = self.h_s(z_hat)
        return scales, torch.zeros_like(scales)

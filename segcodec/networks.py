"""The networks of Liu et al. (MICCAI 2020): compressor C, feature reconstructor g, segmentor s.

One set of classes serves 2D and 3D; ``ndim`` picks the convolution type.  C runs at the
clinic, so it is a handful of plain convolutions; g and s run on the server and may be heavier.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .architecture import Architecture
from .compressor import LEAK, downsample

# PyTorch's CPU heuristic sends a batch-1 input with batch x channels x first two sizes under
# 20,480 to its reference convolution, not oneDNN's: for volumes with 8 channels that is about
# 10x slower (80 ms against 6.4 ms for an 8->8 convolution on the 32x48x32 grid, one thread).
# 3D inference always asks for oneDNN; in 2D the heuristic's choice is the faster one (C of
# isic-lesion-v3.1: 1.6 ms against 2.7 ms), and with gradients PyTorch still chooses, so
# training is unchanged.  The two agree to float rounding (about 1e-6 here).
_ONEDNN = torch.backends.mkldnn.is_available()


class Conv3d(nn.Conv3d):
    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        if (_ONEDNN and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.padding_mode == "zeros"):
            return torch.ops.aten.mkldnn_convolution(x, weight, bias, self.padding, self.stride,
                                                     self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


_CONV = {2: nn.Conv2d, 3: Conv3d}


def _conv(ndim: int, cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Module:
    return _CONV[ndim](cin, cout, k, stride=stride, padding=k // 2)


class Compressor(nn.Module):
    """C: image -> latent logits (K channels, downsampled by first_stride * 2**len(widths[1:])).

    Latent bits are ``logits > 0`` at inference; training samples them (see ``binarize``).
    ``first_stride`` 2 makes the first convolution strided, so no layer runs on the full grid:
    on the CPU, layers with few channels there take far longer than their share of the
    arithmetic (hippocampus-v4's first layer, 7% of C's multiply-adds, takes a fifth of its
    time).
    """

    def __init__(self, ndim: int, in_channels: int, latent_channels: int, widths: list[int],
                 first_stride: int = 1):
        super().__init__()
        # Leaky activations: with plain ReLU the few channels of C can die early in training,
        # leaving constant latents that carry nothing.
        layers: list[nn.Module] = [_conv(ndim, in_channels, widths[0], stride=first_stride),
                                   nn.LeakyReLU(LEAK)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [_conv(ndim, cin, cout, stride=2), nn.LeakyReLU(LEAK),
                       _conv(ndim, cout, cout), nn.LeakyReLU(LEAK)]
        layers.append(_conv(ndim, widths[-1], latent_channels, k=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, features: list | None = None) -> torch.Tensor:
        """Latent logits; ``features``, when given, collects every hidden activation (what
        the domain's appearance check describes an input by)."""
        if features is None:
            return self.body(x)
        for layer in self.body:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return x


class Reconstructor(nn.Module):
    """g: binary latents -> a feature map at the working resolution (paper Fig. 2b: one
    channel; ``out_channels``: the image's, where s starts from the uncompressed segmentor).

    Each width after the first doubles the resolution.  Given ``out_shape`` (where g upsamples
    fewer times than C downsamples, so it stops short of the working grid), its map is
    interpolated there: its convolutions then run at a coarser grid, which in 3D is most of
    g's cost.
    """

    def __init__(self, ndim: int, latent_channels: int, widths: list[int], out_channels: int = 1,
                 out_shape: list[int] | None = None):
        super().__init__()
        self.ndim = ndim
        self.out_shape = None if out_shape is None else tuple(out_shape)
        self.inp = nn.Sequential(_conv(ndim, latent_channels, widths[0]), nn.ReLU(inplace=True),
                                 _conv(ndim, widths[0], widths[0]), nn.ReLU(inplace=True))
        self.ups = nn.ModuleList(
            nn.Sequential(_conv(ndim, cin, cout), nn.ReLU(inplace=True))
            for cin, cout in zip(widths[:-1], widths[1:]))
        self.out = _conv(ndim, widths[-1], out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        for up in self.ups:
            h = up(F.interpolate(h, scale_factor=2, mode=mode, align_corners=False))
        h = self.out(h)
        if self.out_shape is not None:
            size = self.out_shape
            if self.ndim == 2 and (z.shape[2] > z.shape[3]) != (size[0] > size[1]):
                size = size[::-1]  # latents of a quarter-turned image (training's flips)
            h = F.interpolate(h, size=size, mode=mode, align_corners=False)
        return h


_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class _Block(nn.Sequential):
    def __init__(self, ndim: int, cin: int, cout: int, norm: bool):
        layers: list[nn.Module] = []
        for a, b in ((cin, cout), (cout, cout)):
            layers.append(_conv(ndim, a, b))
            if norm:
                layers.append(_NORM[ndim](b))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Segmentor(nn.Module):
    """s: a small U-Net from g's feature map (or, uncompressed, the image) to class logits.

    ``norm`` adds batch normalisation after each convolution (arch key ``s_norm``); models
    exported before it existed have none and load unchanged.
    """

    def __init__(self, ndim: int, n_classes: int, widths: list[int], in_channels: int = 1,
                 norm: bool = False):
        super().__init__()
        self.ndim = ndim
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_Block(ndim, cin, w, norm))
            cin = w
        self.up = nn.ModuleList(_Block(ndim, wd + wu, wu, norm)
                                for wd, wu in zip(reversed(widths[1:]), reversed(widths[:-1])))
        self.head = _conv(ndim, widths[0], n_classes, k=1)

    def forward(self, f: torch.Tensor, features: list | None = None) -> torch.Tensor:
        """Class logits; ``features``, when given, collects the bottleneck's activations
        (what distillation matches)."""
        pool = F.max_pool2d if self.ndim == 2 else F.max_pool3d
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        skips = []
        h = f
        for i, block in enumerate(self.down):
            if i:
                h = pool(h, 2)
            h = block(h)
            skips.append(h)
        if features is not None:
            features.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[2:], mode=mode, align_corners=False)
            h = block(torch.cat([h, skip], 1))
        return self.head(h)


class SegCodecNet(nn.Module):
    """C, g and s together, built from a model manifest's ``architecture`` entry."""

    def __init__(self, arch: dict):
        super().__init__()
        self.arch = arch = Architecture.from_json(arch).to_json()
        # ``g_channels``: g's map has the image's channel count where s starts from the
        # uncompressed segmentor (v2); one channel, as in the paper's Fig. 2b, before.
        self.compressor, self.reconstructor = _c_and_g(arch, arch["g_channels"])
        self.segmentor = Segmentor(arch["ndim"], arch["n_classes"], arch["s_widths"],
                                   in_channels=arch["g_channels"], norm=arch["s_norm"])

    def latent_shape(self) -> tuple[int, ...]:
        return Architecture.from_json(self.arch).latent_shape

    def decode_logits(self, z: torch.Tensor, features: list | None = None) -> torch.Tensor:
        """g then s: binary latents (float 0/1) -> class logits at the working resolution."""
        return self.segmentor(self.reconstructor(z), features)

    def forward(self, x: torch.Tensor, stochastic: bool = True, features: list | None = None):
        """Training path: returns (class logits, bit probabilities, bits)."""
        p, z = latent_bits(self.compressor, x, stochastic)
        return self.decode_logits(z, features), p, z


def _c_and_g(arch: dict, g_channels: int) -> tuple[Compressor, Reconstructor]:
    nd = arch["ndim"]
    compressor = Compressor(nd, arch["in_channels"], arch["latent_channels"], arch["c_widths"],
                            arch["c_first_stride"])
    short = 2 ** (len(arch["g_widths"]) - 1) < downsample(arch)
    reconstructor = Reconstructor(nd, arch["latent_channels"], arch["g_widths"], g_channels,
                                  out_shape=arch["work_shape"] if short else None)
    return compressor, reconstructor


class AutoEncoder(nn.Module):
    """Auto/Seg's codec (the paper's baseline): C and an image decoder, g with the image's
    channels out, trained on pixel MSE; a segmentor then segments its reconstruction."""

    def __init__(self, arch: dict):
        super().__init__()
        arch = Architecture.from_json(arch).to_json()
        self.compressor, self.reconstructor = _c_and_g(arch, arch["in_channels"])

    def forward(self, x: torch.Tensor, stochastic: bool = True):
        """Returns (reconstruction, bit probabilities, bits)."""
        p, z = latent_bits(self.compressor, x, stochastic)
        return self.reconstructor(z), p, z


def latent_bits(compressor: nn.Module, x: torch.Tensor, stochastic: bool = True):
    """(bit probabilities, bits) of C on ``x``: sampled in training (``binarize``), thresholded
    otherwise, with a straight-through gradient to the probabilities."""
    p = torch.sigmoid(compressor(x))
    z = binarize(p) if stochastic else (p > 0.5).to(p.dtype)
    return p, p + (z - p).detach()


def binarize(p: torch.Tensor) -> torch.Tensor:
    """Stochastic binarisation (Toderici et al.): 1 with probability p."""
    return (torch.rand_like(p) < p).to(p.dtype)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

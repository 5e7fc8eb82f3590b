"""C at the clinic: the compressor's forward pass in numpy, from a model file's weights.

The paper puts a light network C at the clinic and the heavy g and s on the server; this is
the clinic's C, so that encoding needs no torch (its import alone outlasts a whole encode).
It computes what ``networks.Compressor`` computes (the layers ``networks.Compressor`` builds
from the same architecture entry, format_spec.md §6), in float64: the latents are the signs
of its logits, and float64 leaves a sign decided by rounding (float32's, or the order of a
machine's sums) to logits within about 1e-12 of zero instead of 1e-6.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import backend
from .architecture import Architecture
from .errors import SgcError

LEAK = 0.1  # the LeakyReLU slope of C (here and in networks.Compressor)
PREFIX = "compressor.body."


def downsample(arch: dict) -> int:
    """How many grid steps of the working grid one latent covers, per axis."""
    return Architecture.from_json(arch).downsample


def latent_shape(arch: dict) -> tuple[int, ...]:
    """(K, *grid): the binary latents of one input."""
    return Architecture.from_json(arch).latent_shape


def layer_plan(arch: dict) -> list[tuple[int, int, int, int, bool]]:
    """C's convolutions in order: (body index, in channels, out channels, kernel, stride), and
    whether a LeakyReLU follows, as ``networks.Compressor`` lays them out."""
    a = Architecture.from_json(arch)
    widths = a.c_widths
    plan = [(0, a.in_channels, widths[0], 3, a.c_first_stride, True)]
    for cin, cout in zip(widths[:-1], widths[1:]):
        i = plan[-1][0] + 2
        plan += [(i, cin, cout, 3, 2, True), (i + 2, cout, cout, 3, 1, True)]
    plan.append((plan[-1][0] + 2, widths[-1], a.latent_channels, 1, 1, False))
    return plan


class Compressor:
    """C from its weights (``compressor.body.N.weight`` / ``.bias``, as numpy arrays)."""

    def __init__(self, arch: dict, weights: dict):
        self.ndim = arch["ndim"]
        self.layers = []
        for index, cin, cout, k, stride, act in layer_plan(arch):
            w = weights.get(f"{PREFIX}{index}.weight")
            b = weights.get(f"{PREFIX}{index}.bias")
            want = (cout, cin) + (k,) * self.ndim
            if w is None or b is None or w.shape != want or b.shape != (cout,):
                raise SgcError(f"compressor layer {index}: weights of shape "
                               f"{None if w is None else w.shape}, expected {want}")
            self.layers.append((w.astype(np.float64), b.astype(np.float64), stride, act))
        expected = {f"{PREFIX}{i}.{p}" for i, *_ in layer_plan(arch) for p in ("weight", "bias")}
        if extra := sorted(k for k in weights if k.startswith(PREFIX) and k not in expected):
            raise SgcError(f"compressor weights not in its architecture: {extra[:3]}")

    def __call__(self, x: np.ndarray, features: list | None = None) -> np.ndarray:
        """(C, *grid) float -> latent logits (K, *latent grid), float64; ``features``, when
        given, collects every hidden activation (channels first), as the torch C does."""
        x = np.asarray(x, dtype=np.float64)
        with backend.blas_limits():
            for w, b, stride, act in self.layers:
                x = _conv(x, w, b, stride)
                if act:
                    np.maximum(x, LEAK * x, out=x)  # LeakyReLU, as LEAK < 1
                    if features is not None:
                        features.append(x)
        return x


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """A 'same'-padded convolution (zeros outside), as torch's ConvNd with padding k // 2."""
    nd, k = w.ndim - 2, w.shape[2]
    p = k // 2
    if p:
        x = np.pad(x, [(0, 0)] + [(p, p)] * nd)
    windows = sliding_window_view(x, (k,) * nd, axis=tuple(range(1, nd + 1)))
    if stride > 1:
        windows = windows[(slice(None),) + (slice(None, None, stride),) * nd]
    # windows: (Cin, *out, *kernel); weights: (Cout, Cin, *kernel)
    axes = [0] + list(range(nd + 1, 2 * nd + 1))
    out = np.tensordot(w, windows, axes=(list(range(1, nd + 2)), axes))  # (Cout, *out)
    out += b.reshape((-1,) + (1,) * nd)
    return out

"""A model's architecture (format_spec.md §6): the one place its keys, their bounds and what an
absent optional key means are written.

    arch = Architecture.from_json(d["architecture"])   # SgcError if implausible
    arch.downsample, arch.latent_shape, arch.to_json()

A manifest is checked here before any network is built, so a crafted file cannot make a
reader allocate 8,000-wide convolutions; export checks what it writes the same way, so it
never writes what the loader refuses.  Networks, the numpy C and the training recipes read
the filled-in ``to_json()`` dict, in which every key is present.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import SgcError

# What an absent optional key means: s without batch normalisation (the v0 models), a
# one-channel g (v0, v1), C's first convolution at stride 1 (all but hippocampus-v5).
OPTIONAL = {"s_norm": False, "g_channels": 1, "c_first_stride": 1}
_BOUNDS = {"ndim": (2, 3), "in_channels": (1, 3), "latent_channels": (1, 16),
           "n_classes": (2, 255), "g_channels": (1, 3)}
_WIDTHS = {"c_widths": (2, 4), "g_widths": (2, 4), "s_widths": (1, 5)}  # how many, 1..512 each


@dataclass(frozen=True)
class Architecture:
    ndim: int
    in_channels: int
    latent_channels: int
    c_widths: tuple[int, ...]
    g_widths: tuple[int, ...]
    s_widths: tuple[int, ...]
    n_classes: int
    work_shape: tuple[int, ...]
    s_norm: bool = OPTIONAL["s_norm"]
    g_channels: int = OPTIONAL["g_channels"]
    c_first_stride: int = OPTIONAL["c_first_stride"]

    @classmethod
    def from_json(cls, arch) -> Architecture:
        """The architecture a manifest (or a training recipe) describes; SgcError, naming the
        key, unless it is a plausible ``SegCodecNet`` one."""
        def bad(why):
            return SgcError(f"architecture {why}")
        if not isinstance(arch, dict):
            raise bad("is not an object")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in arch:
            if key not in known:
                raise bad(f"key {key!r} is unknown")
        arch = {**OPTIONAL, **arch}
        for key, (lo, hi) in _BOUNDS.items():
            value = arch.get(key)
            if type(value) is not int or not lo <= value <= hi:
                raise bad(f"{key} = {value!r}, expected an integer in {lo}..{hi}")
        for key, (lo, hi) in _WIDTHS.items():
            widths = arch.get(key)
            if not isinstance(widths, (list, tuple)) or not lo <= len(widths) <= hi or \
                    any(type(w) is not int or not 1 <= w <= 512 for w in widths):
                raise bad(f"{key} = {widths!r}, expected {lo}..{hi} integers in 1..512")
        if type(arch["c_first_stride"]) is not int or arch["c_first_stride"] not in (1, 2):
            raise bad(f"c_first_stride = {arch['c_first_stride']!r}, expected 1 or 2")
        if type(arch["s_norm"]) is not bool:
            raise bad("s_norm is not a boolean")
        step = arch["c_first_stride"] * 2 ** (len(arch["c_widths"]) - 1)
        if 2 ** (len(arch["g_widths"]) - 1) > step:
            raise bad("g_widths: more upsamplings than C downsamples")
        shape = arch.get("work_shape")
        if not isinstance(shape, (list, tuple)) or len(shape) != arch["ndim"] or \
                any(type(s) is not int or not 4 <= s <= 512 or s % step for s in shape):
            raise bad(f"work_shape = {shape!r}, expected {arch['ndim']} multiples of {step} "
                      "(C's downsampling) in 4..512")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})

    def to_json(self) -> dict:
        """Every key, lists as JSON has them."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @property
    def downsample(self) -> int:
        """How many grid steps of the working grid one latent covers, per axis."""
        return self.c_first_stride * 2 ** (len(self.c_widths) - 1)

    @property
    def compressor(self) -> dict:
        """What C's weights depend on: two architectures with the same C can share them."""
        return {k: getattr(self, k) for k in ("ndim", "in_channels", "latent_channels",
                                               "c_widths", "c_first_stride")}

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(K, *grid): the binary latents of one input."""
        return (self.latent_channels, *(s // self.downsample for s in self.work_shape))


def filled(arch: dict) -> dict:
    """``arch`` checked, with every optional key present."""
    return Architecture.from_json(arch).to_json()

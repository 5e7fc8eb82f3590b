"""D: a SegAN-style critic over label maps (Xue et al. 2018; Liu et al. 2020, Eq. 1).

D sees a label map (softmax probabilities for a prediction, one-hot for the truth) and returns
the features of every layer; ``loss_dis`` compares those multi-scale features of predicted and
true maps.  It is only used in training.
"""
from __future__ import annotations

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class Critic(nn.Module):
    def __init__(self, ndim: int, n_classes: int, widths: list[int]):
        super().__init__()
        layers, cin = [], n_classes
        for w in widths:
            layers.append(nn.Sequential(_CONV[ndim](cin, w, 4, stride=2, padding=1),
                                        nn.LeakyReLU(0.2)))
            cin = w
        self.layers = nn.ModuleList(layers)

    def forward(self, label_map: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's features, the input itself first (SegAN's scale 0)."""
        feats, h = [label_map], label_map
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return feats

    @torch.no_grad()
    def clip_(self, bound: float) -> None:
        """Weight clipping keeps D Lipschitz, as in SegAN and WGAN."""
        for p in self.parameters():
            p.clamp_(-bound, bound)

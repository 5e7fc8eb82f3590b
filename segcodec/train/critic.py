"""D: a SegAN-style critic over label maps (Xue et al. 2018; Liu et al. 2020, Eq. 1).

D sees a label map (softmax probabilities for a prediction, one-hot for the truth) and returns
the features of every layer; ``loss_dis`` compares those multi-scale features of predicted and
true maps.  It is only used in training.

SegAN keeps D Lipschitz by clipping its weights; here D maximising an L1 distance then simply
inflated its features (loss_dis grew from 0.2 to 25 in 30 steps on fixtures and swamped
loss_seg), so each convolution is spectrally normalised instead (Miyato et al. 2018).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class Critic(nn.Module):
    def __init__(self, ndim: int, n_classes: int, widths: list[int]):
        super().__init__()
        layers, cin = [], n_classes
        for w in widths:
            conv = spectral_norm(_CONV[ndim](cin, w, 4, stride=2, padding=1))
            layers.append(nn.Sequential(conv, nn.LeakyReLU(0.2)))
            cin = w
        self.layers = nn.ModuleList(layers)

    def forward(self, label_map: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's features, the input itself first (SegAN's scale 0)."""
        feats, h = [label_map], label_map
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return feats

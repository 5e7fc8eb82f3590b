"""The paper's losses: segmentation (Eq. 2), discriminator (Eq. 1) and compression rate (Eq. 5)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import bits


def loss_seg(prob: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """Mean squared error between predicted class probabilities and the (soft) one-hot truth,
    plus ``dice_weight`` x (1 - soft Dice of the foreground classes)."""
    loss = F.mse_loss(prob, target)
    if dice_weight:
        dims = (0,) + tuple(range(2, prob.ndim))
        p, t = prob[:, 1:], target[:, 1:]
        dice = ((2 * (p * t).sum(dims) + 1) / (p.sum(dims) + t.sum(dims) + 1)).mean()
        loss = loss + dice_weight * (1 - dice)
    return loss


def loss_distil(logits: torch.Tensor, teacher_logits: torch.Tensor, features: torch.Tensor,
                teacher_features: torch.Tensor, temperature: float = 2.0,
                feature_weight: float = 0.02) -> torch.Tensor:
    """Distillation from the uncompressed segmentor on the image to s on g(latents).

    The squared distance between the softened class probabilities (Eq. 2's form, so it weighs
    like ``loss_seg``) plus ``feature_weight`` x the bottleneck features' squared distance
    relative to the teacher's feature energy (scale-free across tasks).
    """
    soft = F.mse_loss(torch.softmax(logits / temperature, 1),
                      torch.softmax(teacher_logits / temperature, 1))
    feat = F.mse_loss(features, teacher_features) / (teacher_features.pow(2).mean() + 1e-6)
    return soft + feature_weight * feat


def loss_dis(critic, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between D's multi-scale features of predicted and true label maps.

    C and s minimise it; D maximises it.
    """
    # One pass over both maps: a spectrally normalised D refines its weights on every
    # training-mode call, and both maps must see the same D.
    feats = critic(torch.cat([prob, target]))
    n = len(prob)
    return torch.stack([(f[:n] - f[n:]).abs().mean() for f in feats]).mean()


def context_index(z: torch.Tensor) -> torch.Tensor:
    """The §5.2 context of every latent bit of a batch (N, K, *grid), as in ``bits.py``.

    Vectorised with convolutions so training can use it on every step; the numba kernels
    in ``bits.py`` stay the reference used for coding (a test checks they agree).
    """
    n, k_ch, *grid = z.shape
    ndim = len(grid)
    conv = F.conv2d if ndim == 2 else F.conv3d
    cross = torch.zeros((1, 1) + (3,) * ndim, dtype=z.dtype, device=z.device)
    for axis in range(ndim):
        idx = [1] * ndim
        for off in (0, 2):
            idx[axis] = off
            cross[(0, 0, *idx)] = 1
    neigh = conv(z.reshape(n * k_ch, 1, *grid), cross, padding=1).reshape(z.shape)
    coords = torch.meshgrid(*[torch.arange(s, device=z.device) for s in grid], indexing="ij")
    phase = (sum(coords) % 2).expand_as(z[:, 0]).long()
    zero = torch.zeros_like(z[:, :1])
    prev1 = torch.cat([zero, z[:, :-1]], 1)
    prev2 = torch.cat([zero, zero, z[:, :-2]], 1)[:, :k_ch]
    a = (prev1 + 2 * prev2).long()
    neigh_prev = torch.cat([zero, neigh[:, :-1]], 1)
    nn_count = torch.where(phase[:, None] == 1, neigh, neigh_prev).long()
    k = torch.arange(k_ch, device=z.device).view(1, -1, *([1] * ndim))
    return ((2 * k + phase[:, None]) * 4 + a) * (2 * ndim + 1) + nn_count


class ContextRate(torch.nn.Module):
    """``loss_cr``: the bits the latents would cost under the shipped context model.

    The probability of a 1 in each context is a running count over the training latents (the
    Krichevsky-Trofimov estimate that ``entropy.fit_table`` exports); the loss is the cross
    entropy between C's bit probabilities and that table, so its gradient moves each bit
    towards what its context predicts.  Contexts are taken from the sampled bits and carry no
    gradient.
    """

    def __init__(self, latent_channels: int, ndim: int, decay: float = 0.99):
        super().__init__()
        size = bits.n_contexts(latent_channels, ndim)
        self.decay = decay
        self.register_buffer("ones", torch.full((size,), 0.5))
        self.register_buffer("total", torch.ones(size))

    def forward(self, p: torch.Tensor, z: torch.Tensor, n_pixels: int) -> torch.Tensor:
        """Estimated bits per input pixel for the batch's mean latent."""
        ctx = context_index(z.detach()).reshape(-1)
        if self.training:
            with torch.no_grad():
                size = self.ones.numel()
                ones = torch.bincount(ctx, weights=z.detach().reshape(-1), minlength=size)
                total = torch.bincount(ctx, minlength=size).to(ones.dtype)
                self.ones.mul_(self.decay).add_(ones)
                self.total.mul_(self.decay).add_(total)
        q = ((self.ones + 0.5) / (self.total + 1.0)).clamp(1e-4, 1 - 1e-4)[ctx]
        p = p.reshape(-1)
        nats = -(p * torch.log(q) + (1 - p) * torch.log1p(-q))
        return nats.sum() / math.log(2) / (len(z) * n_pixels)

"""Test inputs and an independent float64 reference for the Poly focal loss.

The reference is written from the formula (README, "What Poly-1 focal loss is") with plain
logs and a loop-built one-hot, not the package's code path.
"""
from typing import Sequence

import torch
from torch import Tensor


def make_logits(n: int, c: int, *, scale: float = 3.0, seed: int = 0,
                dtype: torch.dtype = torch.float32, device: str = 'cpu') -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)


def make_labels(n: int, c: int, *, seed: int = 1, device: str = 'cpu',
                background_fraction: float = 0.5) -> Tensor:
    """Class indices in [0, C]; about ``background_fraction`` of them are C."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=gen)
    background = torch.rand(n, generator=gen) < background_fraction
    labels[background] = c
    return labels.to(device)


def make_soft_targets(shape: Sequence[int], *, seed: int = 2, device: str = 'cpu') -> Tensor:
    """Soft scores in [0, 1] with exact 0s and 1s mixed in."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(*shape, generator=gen)
    target[torch.rand(*shape, generator=gen) < 0.3] = 0.0
    target[torch.rand(*shape, generator=gen) < 0.1] = 1.0
    return target.to(device)


def reference_poly_focal(x: Tensor, t: Tensor, epsilons: Sequence[float], gamma: float,
                         alpha: float, alpha_weighted_poly: bool = True,
                         activated: bool = False) -> Tensor:
    """Element-wise loss in float64; ``t`` holds per-element targets in [0, 1]."""
    x, t = x.double(), t.double()
    p = x if activated else 1.0 / (1.0 + torch.exp(-x))
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = t * p + (1 - t) * (1 - p)
    alpha_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else torch.ones_like(t)
    focal = alpha_t * (1 - p_t) ** gamma * ce
    poly = sum(eps * (1 - p_t) ** (gamma + j) for j, eps in enumerate(epsilons, start=1))
    return focal + (alpha_t if alpha_weighted_poly else 1.0) * poly


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """(N, C) float64 one-hot with label C meaning all zeros, built by a loop."""
    out = torch.zeros(labels.numel(), num_classes, dtype=torch.float64)
    for i, label in enumerate(labels.tolist()):
        if label < num_classes:
            out[i, label] = 1.0
    return out

"""Optimisers and the learning-rate schedule of SCIENCE.md section 6.

LARS follows SimCLR/BYOL practice: BN parameters and biases (all 1-d tensors) are
excluded from weight decay and from the trust ratio (the published code did not exclude
them; section 8).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step is scaled per tensor by eta * ||w|| / ||g + wd w||.

    Groups with ``lars=False`` (BN, bias) get plain momentum SGD without decay.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 1e-3):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                      "eta": eta, "lars": True})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    if group["weight_decay"]:
                        g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float, lars: bool) -> list[dict]:
    """Split 1-d tensors (BN weights/biases, biases) out: no decay, no trust ratio."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if lars:
        groups[0]["lars"], groups[1]["lars"] = True, False
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    lars = cfg.optimizer == "lars"
    groups = param_groups(model, cfg.weight_decay, lars)
    if lars:
        return LARS(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    return torch.optim.SGD(groups, lr=cfg.scaled_lr, momentum=cfg.momentum)


def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up over cfg.warmup_epochs, then cosine to 0 at the last step."""
    total = cfg.epochs * steps_per_epoch
    warm = min(cfg.warmup_epochs * steps_per_epoch, total)
    peak = cfg.scaled_lr
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

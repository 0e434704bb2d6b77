"""Downstream quality of one model's features (SCIENCE.md section 4): kNN, nearest class
centre, linear probe, and feature extraction in eval mode.

Features and labels are torch tensors on any device (labels: integer class ids >= 0); the
computation stays on the features' device, in float32, and accuracies are python floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["extract_features", "knn_accuracy", "linear_probe_accuracy", "ncc_accuracy",
           "recalibrate_batchnorm"]


def _prepare(train_feats, train_labels, test_feats, test_labels):
    device = train_feats.device
    tr, te = train_feats.detach().float(), test_feats.detach().to(device).float()
    ytr = torch.as_tensor(train_labels, device=device).long().reshape(-1)
    yte = torch.as_tensor(test_labels, device=device).long().reshape(-1)
    if tr.dim() != 2 or te.dim() != 2 or tr.shape[1] != te.shape[1]:
        raise ValueError(f"features must be (n, d) with the same d, got {tuple(tr.shape)} and "
                         f"{tuple(te.shape)}")
    if len(ytr) != len(tr) or len(yte) != len(te):
        raise ValueError("one label per feature row is required")
    if len(tr) == 0 or len(te) == 0:
        raise ValueError("empty train or test set")
    n_classes = int(max(ytr.max(), yte.max())) + 1
    return tr, ytr, te, yte, n_classes


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor,
                 test_feats: torch.Tensor, test_labels: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, chunk_size: int = 1024) -> float:
    """Weighted kNN on cosine similarity (Wu et al. 2018, InstDisc).

    Each test row votes with its k most similar train rows, weight exp(cos / temperature);
    the class with the largest summed weight wins. Test rows are processed in chunks so
    that memory is O(chunk_size x n_train).
    """
    tr, ytr, te, yte, n_classes = _prepare(train_feats, train_labels, test_feats, test_labels)
    tr, te = F.normalize(tr, dim=1), F.normalize(te, dim=1)
    k = min(k, len(tr))
    correct = 0
    for start in range(0, len(te), chunk_size):
        sim, idx = (te[start:start + chunk_size] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), n_classes, device=tr.device)
        votes.scatter_add_(1, ytr[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == yte[start:start + chunk_size]).sum())
    return correct / len(te)


def ncc_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor,
                 test_feats: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Nearest class centre: centres are means of L2-normalised train features; a test row
    goes to the centre of highest cosine similarity (classes absent from train never win)."""
    tr, ytr, te, yte, n_classes = _prepare(train_feats, train_labels, test_feats, test_labels)
    tr, te = F.normalize(tr, dim=1), F.normalize(te, dim=1)
    centres = torch.zeros(n_classes, tr.shape[1], device=tr.device).index_add_(0, ytr, tr)
    present = torch.bincount(ytr, minlength=n_classes) > 0
    sim = te @ F.normalize(centres, dim=1).T
    sim[:, ~present] = -math.inf
    return float((sim.argmax(1) == yte).float().mean())


def linear_probe_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor,
                          test_feats: torch.Tensor, test_labels: torch.Tensor,
                          epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4,
                          batch_size: int = 1024, seed: int = 0) -> float:
    """Test accuracy of a softmax-regression probe trained on frozen features.

    Features are standardised with the train mean/std; the linear layer starts at zero (the
    problem is convex, so no random init is needed) and is trained with Adam (L2 weight
    decay) and a cosine learning-rate schedule on minibatches whose order comes from a
    ``torch.Generator`` seeded with ``seed``: the same inputs give the same accuracy.
    """
    tr, ytr, te, yte, n_classes = _prepare(train_feats, train_labels, test_feats, test_labels)
    mean, std = tr.mean(0), tr.std(0, unbiased=False).clamp_min(1e-6)
    tr, te = (tr - mean) / std, (te - mean) / std
    layer = torch.nn.Linear(tr.shape[1], n_classes, device=tr.device)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(tr) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(len(tr), generator=gen).to(tr.device)
            for start in range(0, len(tr), batch_size):
                idx = perm[start:start + batch_size]
                loss = F.cross_entropy(layer(tr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    with torch.no_grad():
        return float((layer(te).argmax(1) == yte).float().mean())


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images in channels-last layout: inference convolutions and pooling run 2-4x faster
    on the CPU (measured in benchmarks/bench.py row c); values agree to float rounding."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def extract_features(model: torch.nn.Module, x_uint8: torch.Tensor,
                     normalize_fn: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, z) = model(normalize_fn(x)) over uint8 images (N, 3, H, W), in chunks.

    Runs in eval mode (BN running statistics, no dropout) under ``torch.no_grad``; chunks
    are moved to the model's device before ``normalize_fn``; the outputs stay there. Every
    submodule's train/eval flag is restored afterwards, even on error.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else x_uint8.device
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    hs, zs = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(x_uint8), batch_size):
                xb = x_uint8[start:start + batch_size].to(device, non_blocking=True)
                h, z = model(_channels_last(normalize_fn(xb)))
                hs.append(h)
                zs.append(z)
    finally:
        for m, mode in modes:
            m.training = mode
    if not hs:
        raise ValueError("extract_features got no images")
    return torch.cat(hs), torch.cat(zs)


def recalibrate_batchnorm(model: torch.nn.Module, x_uint8: torch.Tensor,
                          normalize_fn: Callable[[torch.Tensor], torch.Tensor],
                          batch_size: int = 512) -> torch.nn.Module:
    """Reset every BN layer's running statistics and re-estimate them on ``x_uint8``.

    An untrained model's BN buffers hold mean 0 / variance 1, which makes its eval-mode
    features a poor baseline: a trained model's kNN gain over it can come from BN statistics
    alone. Exact averages (momentum None) over all rows, no gradients, no randomness; the
    weights are untouched and every module's train/eval flag is restored.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    param = next(model.parameters())
    saved = [(m, m.momentum) for m in bns]
    modes = [(m, m.training) for m in model.modules()]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x_uint8), batch_size):
                xb = x_uint8[start:start + batch_size].to(param.device)
                if len(xb) > 1:  # BN needs more than one value per channel
                    model(_channels_last(normalize_fn(xb)))
    finally:
        for m, mom in saved:
            m.momentum = mom
        for m, mode in modes:
            m.training = mode
    return model

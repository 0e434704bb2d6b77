"""Contrastive losses of SCIENCE.md section 2, as pure functions over projector outputs.

Conventions shared by every loss here:

- ``z1``, ``z2`` are the (N, d) projector outputs of the two views; they are L2-normalised
  *inside* the loss, and s(u, v) = u.v / tau.
- The 2N anchors are the rows of ``z = cat([z1, z2])``: anchor k < N is view a of sample k,
  anchor k >= N is view b of sample k - N; the positive of anchor k is k +- N.
- Each loss is the mean over the 2N anchors, written as a log-sum-exp over the similarity
  row with masked entries set to -inf (never exp()/sum(exp()): at tau = 0.01 the logits reach
  1/tau = 100 and exp(100) overflows float32).
- Half-precision inputs are computed in float32 (logits up to 1/tau need the range).

CL and NSCL are one function (``_contrastive``) differing only in the negatives mask: CL is
NSCL with every sample in its own class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SingleClassBatchError", "ce_loss", "cl_loss", "nscl_loss", "supcon_loss"]


class SingleClassBatchError(ValueError):
    """A contrastive loss without the positive in its denominator got an anchor with no
    negative: one class fills the whole batch (NSCL) or N < 2 (CL)."""


def _similarities(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """(2N, 2N) logits s(z_k, z_l) = z_k . z_l / tau of the L2-normalised stacked views."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must be (N, d) of the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    z = torch.cat([z1, z2], dim=0)
    if z.dtype != torch.float64:
        z = z.float()
    z = F.normalize(z, dim=1)
    return z @ z.T / tau


def _labels2(labels: torch.Tensor, n: int, device) -> torch.Tensor:
    """Labels of the 2N anchors (both views share their sample's label)."""
    labels = torch.as_tensor(labels, device=device).reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"labels must have N={n} entries, got {labels.numel()}")
    return labels.repeat(2)


def _contrastive(z1, z2, tau, labels, include_positive):
    """Mean over anchors of -s(pos) + logsumexp over {negatives} (+ the positive).

    Negatives of anchor k: every view of every sample with a different label (labels None:
    every other sample, i.e. CL). One boolean mask decides which logits enter the log-sum-exp.
    """
    n = z1.shape[0]
    sim = _similarities(z1, z2, tau)
    idx = torch.arange(2 * n, device=sim.device)
    pos_idx = (idx + n) % (2 * n)
    y = idx % n if labels is None else _labels2(labels, n, sim.device)
    keep = y[:, None] != y[None, :]  # negatives: excludes the anchor itself and its positive
    if not include_positive:
        # An empty log-sum-exp is -inf (loss -inf, gradient NaN): refuse instead.
        # It happens iff one class holds the whole batch (or N == 1 for CL).
        # (One host sync per call for NSCL; CL only checks the shape.)
        if n < 2 or (labels is not None and bool((y == y[0]).all())):
            what = "N >= 2 samples" if labels is None else "at least two classes in the batch"
            raise SingleClassBatchError(
                "contrastive loss without the positive in the denominator needs a negative for "
                f"every anchor ({what}); got N={n} with no different-class sample. Use "
                "include_positive=True (such anchors then contribute 0) or mix classes.")
    else:
        keep[idx, pos_idx] = True
    lse = torch.logsumexp(sim.masked_fill(~keep, float("-inf")), dim=1)
    return (lse - sim[idx, pos_idx]).mean()


def cl_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float,
            include_positive: bool = False) -> torch.Tensor:
    """Self-supervised contrastive loss (SCIENCE.md section 2).

    loss(i,a) = -s(z_i^a, z_i^b) + log sum_{j != i} sum_{v in {a,b}} exp(s(z_i^a, z_j^v)),
    the decoupled form of the paper (2N-2 denominator terms). ``include_positive=True``
    adds the positive to the denominator (2N-1 terms): SimCLR's NT-Xent.
    Requires N >= 2 when ``include_positive`` is False.
    """
    return _contrastive(z1, z2, tau, None, include_positive)


def nscl_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, tau: float,
              include_positive: bool = False) -> torch.Tensor:
    """Negatives-only supervised contrastive loss: CL whose denominator keeps only j, y_j != y_i.

    Labels are used only to drop same-class negatives, so NSCL <= CL on every batch and
    NSCL == CL when all labels differ. With ``include_positive=False`` every anchor needs a
    different-class sample, i.e. the batch must hold at least two classes: otherwise a
    ValueError is raised (an empty log-sum-exp would give -inf and NaN gradients). With
    ``include_positive=True`` an anchor without negatives contributes exactly 0.
    """
    return _contrastive(z1, z2, tau, labels, include_positive)


def supcon_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                tau: float) -> torch.Tensor:
    """Supervised contrastive loss, Khosla et al. L_out.

    loss(k) = -(1/|P(k)|) sum_{p in P(k)} [s(z_k, z_p) - log sum_{l != k} exp(s(z_k, z_l))],
    P(k) = every other view with the same label (own other view included, so |P(k)| >= 1);
    the denominator runs over all 2N-1 views but the anchor itself.
    """
    n = z1.shape[0]
    sim = _similarities(z1, z2, tau)
    y = _labels2(labels, n, sim.device)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    lse = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    log_prob = torch.where(pos, sim - lse, torch.zeros((), dtype=sim.dtype, device=sim.device))
    return (-log_prob.sum(1) / pos.sum(1)).mean()


def ce_loss(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a classifier on both views, mean over the 2N (view, sample) pairs."""
    labels = torch.as_tensor(labels, device=logits1.device).reshape(-1)
    logits = torch.cat([logits1, logits2], dim=0)
    if logits.dtype != torch.float64:
        logits = logits.float()
    return F.cross_entropy(logits, labels.repeat(2))

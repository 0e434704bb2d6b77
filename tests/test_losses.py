"""Losses against plain numpy loop references (float64), plus the invariants of SCIENCE.md 2."""

import math

import numpy as np
import pytest
import torch

from clnscl.losses import ce_loss, cl_loss, nscl_loss, supcon_loss

# ---------------------------------------------------------------- numpy references (loops)

def _views(z1, z2):
    z = np.concatenate([z1, z2]).astype(np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _lse(v):
    v = np.asarray(v, dtype=np.float64)
    m = v.max()
    return m + math.log(np.exp(v - m).sum())


def ref_contrastive(z1, z2, tau, labels=None, include_positive=False):
    """CL (labels None) or NSCL: mean over 2N anchors of -s(pos) + lse(negatives [+ pos])."""
    n = len(z1)
    z = _views(z1, z2)
    y = np.arange(n) if labels is None else np.asarray(labels)
    total = 0.0
    for k in range(2 * n):
        i, p = k % n, (k + n) % (2 * n)
        sims = z @ z[k] / tau
        terms = [sims[l] for l in range(2 * n) if y[l % n] != y[i]]
        if include_positive:
            terms.append(sims[p])
        total += -sims[p] + _lse(terms)
    return total / (2 * n)


def ref_supcon(z1, z2, labels, tau):
    n = len(z1)
    z = _views(z1, z2)
    y = np.concatenate([labels, labels])
    total = 0.0
    for k in range(2 * n):
        others = [l for l in range(2 * n) if l != k]
        lse = _lse([z[k] @ z[l] / tau for l in others])
        pos = [l for l in others if y[l] == y[k]]
        total += -np.mean([z[k] @ z[p] / tau - lse for p in pos])
    return total / (2 * n)


def ref_ce(l1, l2, labels):
    total = 0.0
    logits = np.concatenate([l1, l2]).astype(np.float64)
    y = np.concatenate([labels, labels])
    for row, c in zip(logits, y):
        total += _lse(row) - row[c]
    return total / len(logits)


# ---------------------------------------------------------------- helpers

def _batch(n, d, seed):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, d)), g.standard_normal((n, d))


def _t(a, dtype=torch.float64):
    return torch.tensor(a, dtype=dtype)


LABEL_PATTERNS = {
    "distinct": lambda n, g: g.permutation(n),
    "two": lambda n, g: np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)][g.permutation(n)],
    "random": lambda n, g: np.r_[0, 1, g.integers(0, 3, n - 2)],  # >= 2 classes
    "same": lambda n, g: np.zeros(n, int),
}
CASES = [(n, d, tau) for n, d in [(2, 3), (5, 4), (8, 16)] for tau in (0.05, 0.5, 2.0)]


# ---------------------------------------------------------------- against the references

@pytest.mark.parametrize("include_positive", [False, True])
@pytest.mark.parametrize("n,d,tau", CASES)
def test_cl_matches_reference(n, d, tau, include_positive):
    a, b = _batch(n, d, seed=n * 100 + d)
    got = cl_loss(_t(a), _t(b), tau, include_positive=include_positive).item()
    assert got == pytest.approx(ref_contrastive(a, b, tau, None, include_positive), rel=1e-10)


@pytest.mark.parametrize("pattern", ["distinct", "two", "random"])
@pytest.mark.parametrize("include_positive", [False, True])
@pytest.mark.parametrize("n,d,tau", CASES)
def test_nscl_matches_reference(n, d, tau, include_positive, pattern):
    g = np.random.default_rng(n + d)
    a, b = _batch(n, d, seed=n * 7 + d)
    y = LABEL_PATTERNS[pattern](n, g)
    got = nscl_loss(_t(a), _t(b), torch.tensor(y), tau, include_positive=include_positive).item()
    assert got == pytest.approx(ref_contrastive(a, b, tau, y, include_positive), rel=1e-10)


@pytest.mark.parametrize("pattern", ["distinct", "two", "random", "same"])
@pytest.mark.parametrize("n,d,tau", CASES)
def test_supcon_matches_reference(n, d, tau, pattern):
    g = np.random.default_rng(n * d)
    a, b = _batch(n, d, seed=n + 3 * d)
    y = LABEL_PATTERNS[pattern](n, g)
    got = supcon_loss(_t(a), _t(b), torch.tensor(y), tau).item()
    assert got == pytest.approx(ref_supcon(a, b, y, tau), rel=1e-10)


def test_ce_matches_reference():
    g = np.random.default_rng(0)
    l1, l2 = g.standard_normal((7, 4)), g.standard_normal((7, 4))
    y = g.integers(0, 4, 7)
    assert ce_loss(_t(l1), _t(l2), torch.tensor(y)).item() == pytest.approx(ref_ce(l1, l2, y),
                                                                            rel=1e-12)


def test_nscl_with_one_class_and_positive_is_zero():
    a, b = _batch(4, 3, seed=1)
    y = torch.zeros(4, dtype=torch.long)
    assert nscl_loss(_t(a), _t(b), y, 0.5, include_positive=True).item() == 0.0


# ---------------------------------------------------------------- invariants

@pytest.mark.parametrize("include_positive", [False, True])
def test_nscl_le_cl_and_equal_for_distinct_labels(include_positive):
    g = np.random.default_rng(3)
    for trial in range(20):
        n, d = int(g.integers(2, 24)), int(g.integers(2, 12))
        tau = float(g.uniform(0.05, 2.0))
        a, b = _t(g.standard_normal((n, d))), _t(g.standard_normal((n, d)))
        cl = cl_loss(a, b, tau, include_positive).item()
        y = torch.tensor(np.r_[0, 1, g.integers(0, max(2, n // 2), n - 2)])
        assert nscl_loss(a, b, y, tau, include_positive).item() <= cl + 1e-12
        distinct = torch.tensor(g.permutation(n) * 3 + 5)
        assert nscl_loss(a, b, distinct, tau, include_positive).item() == pytest.approx(cl,
                                                                                     rel=1e-12)


def test_symmetric_in_views():
    a, b = _batch(9, 5, seed=4)
    a, b = _t(a), _t(b)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    for ip in (False, True):
        assert cl_loss(a, b, 0.3, ip).item() == pytest.approx(cl_loss(b, a, 0.3, ip).item())
        assert nscl_loss(a, b, y, 0.3, ip).item() == pytest.approx(
            nscl_loss(b, a, y, 0.3, ip).item())
    assert supcon_loss(a, b, y, 0.3).item() == pytest.approx(supcon_loss(b, a, y, 0.3).item())
    assert ce_loss(a, b, y % 5).item() == pytest.approx(ce_loss(b, a, y % 5).item())


@pytest.mark.parametrize("n", [2, 5, 16])
def test_ntxent_identical_embeddings_is_log_2n_minus_1(n):
    z = torch.ones(n, 8)
    for tau in (0.01, 0.5):
        assert cl_loss(z, z, tau, include_positive=True).item() == pytest.approx(
            math.log(2 * n - 1), rel=1e-5)


def test_loss_gap_bound():
    """CL - NSCL <= log(1 + e^{2/tau} n_max / (N - n_max)) (SCIENCE.md section 2)."""
    g = np.random.default_rng(5)
    for trial in range(30):
        n, d = int(g.integers(4, 32)), int(g.integers(2, 16))
        tau = float(g.choice([0.1, 0.5, 1.0, 2.0]))
        y = g.integers(0, int(g.integers(2, 6)), n)
        n_max = np.bincount(y).max()
        if n_max == n:
            continue
        a, b = _t(g.standard_normal((n, d))), _t(g.standard_normal((n, d)))
        bound = math.log1p(math.exp(2 / tau) * n_max / (n - n_max))
        for ip in (False, True):
            gap = cl_loss(a, b, tau, ip).item() - nscl_loss(a, b, torch.tensor(y), tau, ip).item()
            assert -1e-12 <= gap <= bound


# ---------------------------------------------------------------- numerics at tau = 0.01

def _naive_ntxent(z1, z2, tau):
    """The exp()/sum(exp()) form the losses must not use."""
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    e = torch.exp(z @ z.T / tau) * (1 - torch.eye(2 * n))
    pos = e[torch.arange(2 * n), (torch.arange(2 * n) + n) % (2 * n)]
    return -torch.log(pos / e.sum(1)).mean()


def test_finite_loss_and_grad_at_tau_001_float32():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 32, generator=g)
    # views nearly aligned: logits near 1/tau = 100, exp(100) > float32 max
    z1 = (base + 0.01 * torch.randn(16, 32, generator=g)).requires_grad_()
    z2 = (base + 0.01 * torch.randn(16, 32, generator=g)).requires_grad_()
    y = torch.arange(16) % 3
    naive = _naive_ntxent(z1.detach(), z2.detach(), 0.01)
    assert not torch.isfinite(naive), "the naive form must overflow for this test to mean much"
    losses = {
        "cl": cl_loss(z1, z2, 0.01), "cl_ntxent": cl_loss(z1, z2, 0.01, True),
        "nscl": nscl_loss(z1, z2, y, 0.01), "nscl_ntxent": nscl_loss(z1, z2, y, 0.01, True),
        "supcon": supcon_loss(z1, z2, y, 0.01),
    }
    for name, loss in losses.items():
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss), name
        g1, g2 = torch.autograd.grad(loss, (z1, z2))
        assert torch.isfinite(g1).all() and torch.isfinite(g2).all(), name
    # and the stable value agrees with a float64 evaluation
    ref = cl_loss(z1.detach().double(), z2.detach().double(), 0.01, True).item()
    assert losses["cl_ntxent"].item() == pytest.approx(ref, rel=1e-4, abs=1e-3)


def test_half_precision_inputs_are_upcast():
    a, b = _batch(6, 4, seed=9)
    ref = cl_loss(_t(a), _t(b), 0.05).item()
    got = cl_loss(_t(a, torch.bfloat16), _t(b, torch.bfloat16), 0.05)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(ref, rel=0.05)


# ---------------------------------------------------------------- errors

def test_nscl_without_negatives_raises():
    a, b = _batch(5, 3, seed=2)
    with pytest.raises(ValueError, match="at least two classes"):
        nscl_loss(_t(a), _t(b), torch.full((5,), 7), 0.5)


def test_cl_needs_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        cl_loss(torch.randn(1, 3), torch.randn(1, 3), 0.5)
    assert cl_loss(torch.randn(1, 3), torch.randn(1, 3), 0.5, include_positive=True).item() == 0


def test_bad_shapes_and_tau():
    with pytest.raises(ValueError, match="same shape"):
        cl_loss(torch.randn(4, 3), torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match="tau"):
        cl_loss(torch.randn(4, 3), torch.randn(4, 3), 0.0)
    with pytest.raises(ValueError, match="labels"):
        nscl_loss(torch.randn(4, 3), torch.randn(4, 3), torch.arange(3), 0.5)

"""Alignment metrics: golden values, invariances, explicit n x n references, scipy RSA."""

import copy
import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch
from torch import nn

from clnscl import alignment as al
from clnscl.records import ALIGNMENT_METRICS

# ---------------------------------------------------------------- explicit n x n references

def _H(n):
    return np.eye(n) - np.ones((n, n)) / n


def gram_cka(K, L):
    """Biased CKA = <HKH, HLH>_F / (||HKH|| ||HLH||)."""
    H = _H(len(K))
    Kc, Lc = H @ K @ H, H @ L @ H
    return np.sum(Kc * Lc) / (np.linalg.norm(Kc) * np.linalg.norm(Lc))


def hsic_unbiased(K, L):
    """Song et al. (2012) U-statistic, written out with zero-diagonal Grams."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    t = (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
         - 2 / (n - 2) * one @ K @ L @ one)
    return t / (n * (n - 3))


def gram_cka_debiased(K, L):
    return hsic_unbiased(K, L) / math.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))


def _rn(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def explicit_rho(Z1, Z2):
    H = _H(len(Z1))
    S1, S2 = _rn(Z1) @ _rn(Z1).T, _rn(Z2) @ _rn(Z2).T
    return np.linalg.norm(H @ (S1 - S2) @ H) / np.linalg.norm(H @ S1 @ H)


def _pair(n, d1, d2, seed, noise=1.0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, d1))
    Y = X @ g.standard_normal((d1, d2)) / math.sqrt(d1) + noise * g.standard_normal((n, d2))
    return X, Y


# ---------------------------------------------------------------- CKA

def test_golden_values():
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    assert al.linear_cka(X, Y) == pytest.approx(0.5576133, abs=1e-6)
    assert al.linear_cka(X, Y, debiased=True) == pytest.approx(0.5134565, abs=1e-6)


@pytest.mark.parametrize("n,d1,d2", [(30, 5, 8), (50, 20, 3), (12, 40, 40)])
def test_cka_equals_gram_form(n, d1, d2):
    X, Y = _pair(n, d1, d2, seed=n + d1)
    assert al.linear_cka(X, Y) == pytest.approx(gram_cka(X @ X.T, Y @ Y.T), rel=1e-10)
    assert al.linear_cka(X, Y, debiased=True) == pytest.approx(
        gram_cka_debiased(X @ X.T, Y @ Y.T), rel=1e-9)


def test_cka_invariances():
    X, Y = _pair(60, 8, 6, seed=1)
    base, base_d = al.linear_cka(X, Y), al.linear_cka(X, Y, debiased=True)
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((8, 8)))
    for Xt in (X @ Q, 3.7 * X, X + 5.0):  # orthogonal, isotropic scaling, translation
        assert al.linear_cka(Xt, Y) == pytest.approx(base, rel=1e-10)
        assert al.linear_cka(Xt, Y, debiased=True) == pytest.approx(base_d, rel=1e-10)
    assert al.linear_cka(X, X) == pytest.approx(1.0, rel=1e-12)
    assert al.linear_cka(X, X, debiased=True) == pytest.approx(1.0, rel=1e-12)
    assert al.linear_cka(X, Y) == pytest.approx(al.linear_cka(Y, X), rel=1e-12)


def test_biased_cka_inflated_for_independent_gaussians_debiased_not():
    g = np.random.default_rng(0)
    biased, debiased = [], []
    for _ in range(5):
        X, Y = g.standard_normal((256, 64)), g.standard_normal((256, 64))
        biased.append(al.linear_cka(X, Y))
        debiased.append(al.linear_cka(X, Y, debiased=True))
    assert 0.15 < np.mean(biased) < 0.25
    assert abs(np.mean(debiased)) < 0.02


def test_debiased_needs_four_rows():
    with pytest.raises(ValueError, match="n >= 4"):
        al.linear_cka(np.ones((3, 2)), np.ones((3, 2)), debiased=True)


def test_mismatched_rows_raise():
    with pytest.raises(ValueError, match="same rows"):
        al.linear_cka(np.ones((5, 2)), np.ones((6, 2)))


# ---------------------------------------------------------------- RSA

@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_rsa_matches_scipy(method):
    X, Y = _pair(40, 6, 9, seed=3)
    a = scipy.spatial.distance.pdist(X, metric="cosine")
    b = scipy.spatial.distance.pdist(Y, metric="cosine")
    fn = scipy.stats.spearmanr if method == "spearman" else scipy.stats.pearsonr
    assert al.rsa(X, Y, method=method) == pytest.approx(fn(a, b)[0], rel=1e-10)


def test_rsa_default_is_spearman_and_identical_is_one():
    X, Y = _pair(20, 4, 4, seed=4)
    assert al.rsa(X, Y) == al.rsa(X, Y, method="spearman")
    assert al.rsa(X, 2 * X) == pytest.approx(1.0)


def test_rsa_bad_method():
    with pytest.raises(ValueError, match=r"'kendall'.*spearman, pearson"):
        al.rsa(np.ones((5, 2)), np.ones((5, 2)), method="kendall")


def test_rsa_refuses_too_many_rows():
    X = np.random.default_rng(0).standard_normal((11, 2))
    with pytest.raises(ValueError, match="subsample"):
        al.rsa(X, X, max_rows=10)


# ---------------------------------------------------------------- rho, cosine CKA, bounds

def test_rho_zero_for_identical_and_scale_invariant_rows():
    X, _ = _pair(30, 5, 5, seed=5)
    assert al.similarity_distance(X, X) == pytest.approx(0.0, abs=1e-7)
    row_scales = np.random.default_rng(0).uniform(0.5, 3, (30, 1))
    assert al.similarity_distance(X, X * row_scales) == pytest.approx(0.0, abs=1e-7)


def test_zero_row_is_finite():
    X, Y = _pair(20, 4, 4, seed=11)
    X[3] = 0.0  # a dead feature vector: cosine 0 with everything, not nan everywhere
    out = al.compare(X, Y)
    assert all(math.isfinite(out[k]) for k in ("cka", "cka_debiased", "rsa", "rho", "cka_cos"))


@pytest.mark.parametrize("seed", range(4))
def test_rho_feature_form_equals_explicit(seed):
    g = np.random.default_rng(seed)
    n, d1, d2 = int(g.integers(5, 60)), int(g.integers(2, 20)), int(g.integers(2, 20))
    X, Y = _pair(n, d1, d2, seed=seed, noise=float(g.uniform(0.1, 2)))
    assert al.similarity_distance(X, Y) == pytest.approx(explicit_rho(X, Y), rel=1e-9)


def test_cosine_cka_equals_explicit_cosine_kernel_cka():
    X, Y = _pair(40, 7, 5, seed=6)
    expected = gram_cka(_rn(X) @ _rn(X).T, _rn(Y) @ _rn(Y).T)
    assert al.cosine_cka(X, Y) == pytest.approx(expected, rel=1e-10)
    assert al.cosine_cka(X, Y) == pytest.approx(al.linear_cka(_rn(X), _rn(Y)), rel=1e-12)


def test_bound_chain_on_random_pairs():
    g = np.random.default_rng(7)
    checked = 0
    for _ in range(40):
        X, Y = _pair(int(g.integers(10, 80)), int(g.integers(2, 16)), int(g.integers(2, 16)),
                     seed=int(g.integers(1 << 30)), noise=float(g.uniform(0.01, 1.5)))
        rho = al.similarity_distance(X, Y)
        if rho >= 1:
            continue
        checked += 1
        b_sqrt, b_ratio = al.cka_bounds(rho)
        assert al.cosine_cka(X, Y) >= b_sqrt - 1e-12
        assert b_sqrt >= b_ratio
    assert checked >= 10


def test_cka_bounds_values():
    assert al.cka_bounds(0.0) == (1.0, 1.0)
    assert al.cka_bounds(0.6) == pytest.approx((0.8, 0.25))
    for rho in (1.0, 1.5, math.nan):
        assert all(math.isnan(v) for v in al.cka_bounds(rho))


# ---------------------------------------------------------------- compare, input types

def test_compare_keys_and_consistency():
    X, Y = _pair(80, 8, 6, seed=8)
    out = al.compare(X, Y)
    assert tuple(out) == ALIGNMENT_METRICS
    assert all(type(v) is float for v in out.values())
    assert out["cka"] == al.linear_cka(X, Y)
    assert out["cka_debiased"] == al.linear_cka(X, Y, debiased=True)
    assert out["rsa"] == pytest.approx(al.rsa(X, Y), rel=1e-12)
    assert out["rho"] == pytest.approx(al.similarity_distance(X, Y), rel=1e-12)
    assert out["cka_cos"] == pytest.approx(al.cosine_cka(X, Y), rel=1e-12)
    assert (out["bound_sqrt"], out["bound_ratio"]) == al.cka_bounds(out["rho"])


def test_compare_rsa_subsample_is_seeded_and_shared():
    X, Y = _pair(200, 5, 5, seed=9)
    a = al.compare(X, Y, rsa_rows=50, seed=3)
    assert a == al.compare(X, Y, rsa_rows=50, seed=3)
    assert a["rsa"] != al.compare(X, Y, rsa_rows=50, seed=4)["rsa"]
    idx = np.sort(np.random.default_rng(3).choice(200, size=50, replace=False))
    assert a["rsa"] == pytest.approx(al.rsa(X[idx], Y[idx]), rel=1e-12)
    assert al.compare(X, X, rsa_rows=50)["rsa"] == pytest.approx(1.0)


def test_tensors_and_arrays_agree():
    X, Y = _pair(50, 6, 4, seed=10)
    tx, ty = torch.tensor(X, requires_grad=True), torch.tensor(Y)
    for fn in (al.linear_cka, al.cosine_cka, al.similarity_distance, al.rsa):
        assert fn(tx, ty) == pytest.approx(fn(X, Y), rel=1e-12)
    assert al.compare(tx, Y) == pytest.approx(al.compare(X, Y), rel=1e-12, nan_ok=True)
    # float32 tensors are upcast before any arithmetic
    assert al.linear_cka(tx.float(), ty.float()) == pytest.approx(al.linear_cka(X, Y), rel=1e-6)


# ---------------------------------------------------------------- parameter distance

def test_parameter_distance_zero_for_copies():
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    out = al.parameter_distance(m, copy.deepcopy(m))
    assert out == {"param_dist": 0.0, "param_dist_layer": 0.0}


def test_parameter_distance_known_value():
    a = nn.Linear(3, 2)
    with torch.no_grad():
        a.weight.fill_(1.0)
        a.bias.zero_()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.weight[0, 0] += 1.0  # ||dW|| = 1, ||W_a|| = sqrt(6), ||W_b|| = 3
    out = al.parameter_distance(a, b)  # the zero biases are skipped in the layer mean
    assert out["param_dist"] == pytest.approx(1 / math.sqrt(6))
    assert out["param_dist_layer"] == pytest.approx(1 / (0.5 * (math.sqrt(6) + 3)))
    with torch.no_grad():
        b.bias.copy_(torch.tensor([3.0, 4.0]))  # ||db|| = 5, norms 0 and 5 -> 2
    out = al.parameter_distance(a, b)
    assert out["param_dist"] == pytest.approx(math.sqrt(26) / math.sqrt(6))
    assert out["param_dist_layer"] == pytest.approx((1 / (0.5 * (math.sqrt(6) + 3)) + 2) / 2)


def test_parameter_distance_prefixes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.projector, self.head = nn.Linear(3, 3), nn.Linear(3, 2), \
                nn.Linear(2, 2)

    a = Net()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.head.weight.add_(1.0)
    assert al.parameter_distance(a, b)["param_dist"] > 0
    assert al.parameter_distance(a, b, prefixes=("backbone.", "projector."))["param_dist"] == 0
    with pytest.raises(ValueError, match="no parameters"):
        al.parameter_distance(a, b, prefixes="nothing.")


def test_parameter_distance_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        al.parameter_distance(nn.Linear(3, 2), nn.Linear(3, 4))
    with pytest.raises(ValueError, match="different parameters"):
        al.parameter_distance(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2)))


# ---------------------------------------------------------------- fast paths pinned to references

def test_rsa_spearman_with_ties_matches_scipy():
    X, Y = _pair(30, 5, 5, seed=12)
    X[10:15] = X[0]  # duplicated rows: many tied RDM entries (exact zeros and repeats)
    Y[20:22] = Y[1]
    a = scipy.spatial.distance.pdist(X, metric="cosine")
    b = scipy.spatial.distance.pdist(Y, metric="cosine")
    assert al.rsa(X, Y) == pytest.approx(scipy.stats.spearmanr(a, b)[0], rel=1e-10)
    r = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 0.5])
    assert torch.equal(al._average_ranks(r), torch.tensor(scipy.stats.rankdata(r.numpy())))


def test_rsa_pearson_is_feature_form_beyond_max_rows():
    X, Y = _pair(400, 6, 9, seed=13)
    a = scipy.spatial.distance.pdist(X, metric="cosine")
    b = scipy.spatial.distance.pdist(Y, metric="cosine")
    assert al.rsa(X, Y, method="pearson", max_rows=50) == pytest.approx(
        scipy.stats.pearsonr(a, b)[0], rel=1e-10)
    with pytest.raises(ValueError, match="subsample"):
        al.rsa(X, Y, method="spearman", max_rows=50)


@pytest.mark.parametrize("n,d", [(50, 7), (7, 50), (300, 64)])
def test_sq_gram_equals_explicit(n, d):
    A = torch.from_numpy(np.random.default_rng(n).standard_normal((n, d)))
    assert float(al._sq_gram(A)) == pytest.approx(float(((A.T @ A) ** 2).sum()), rel=1e-12)
    # a non-contiguous view takes the same path
    At = torch.from_numpy(np.random.default_rng(d).standard_normal((d, n))).T
    assert float(al._sq_gram(At)) == pytest.approx(float(((At.T @ At) ** 2).sum()), rel=1e-12)

"""Representation and parameter alignment metrics of SCIENCE.md section 4.

Inputs are (n, d) numpy arrays or torch tensors (rows = the same images for both models).
Everything is computed in float64 torch on the input's device (a tensor on the GPU stays
there; arrays go to the CPU) and returned as python floats. Kernel metrics use the feature
form (d x d products, O(n d^2)); no n x n matrix is built except the RDMs of ``rsa``, which
refuses more than ``max_rows`` rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "cka_bounds",
    "compare",
    "cosine_cka",
    "linear_cka",
    "parameter_distance",
    "rsa",
    "similarity_distance",
    "weight_movement",
]

RSA_METHODS = ("spearman", "pearson")


def _f64(x) -> torch.Tensor:
    """(n, d) float64 tensor: tensors keep their device, anything else goes through numpy."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to(torch.float64)
    else:
        t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if t.dim() != 2:
        raise ValueError(f"expected an (n, d) matrix, got shape {tuple(t.shape)}")
    return t


def _pair(X, Y) -> tuple[torch.Tensor, torch.Tensor]:
    X, Y = _f64(X), _f64(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same rows, got {X.shape[0]} and {Y.shape[0]}")
    return X, Y.to(X.device)


def _centre(X: torch.Tensor) -> torch.Tensor:
    return X - X.mean(0, keepdim=True)


def _rownorm(X: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; an all-zero row stays zero (cosine 0 with every row)."""
    return X / X.norm(dim=1, keepdim=True).clamp_min(torch.finfo(X.dtype).tiny)


def _fro2(A: torch.Tensor) -> torch.Tensor:
    return (A * A).sum()


def _sq_gram(A: torch.Tensor) -> torch.Tensor:
    """||A^T A||_F^2 of a float64 (n, d) matrix. On the CPU with n > d it uses BLAS dsyrk
    (the symmetric product: half the flops of A.T @ A), else a matmul."""
    n, d = A.shape
    if A.device.type == "cpu" and n > d and A.dtype == torch.float64:
        from scipy.linalg.blas import dsyrk  # on use (scipy is imported lazily here)

        a = A.contiguous().numpy().T            # (d, n), Fortran order: no copy
        c = torch.from_numpy(dsyrk(1.0, a))     # upper triangle of a a^T = A^T A
        c = c.triu()
        diag = c.diagonal()
        return 2 * _fro2(c) - _fro2(diag)
    return _fro2(A.T @ A)


def _stats(X: torch.Tensor, Y: torch.Tensor) -> dict:
    """The d x d products behind CKA (biased and debiased) and rho, computed once:
    ||Xc^T Xc||^2, ||Yc^T Yc||^2, ||Yc^T Xc||^2 and the Gram diagonals (row norms^2) of
    the column-centred float64 X, Y. O(n d^2)."""
    X, Y = _centre(X), _centre(Y)
    return {"n": X.shape[0], "xx": _sq_gram(X), "yy": _sq_gram(Y), "xy": _fro2(Y.T @ X),
            "rx": (X * X).sum(1), "ry": (Y * Y).sum(1)}


def _cka_from(st: dict, debiased: bool) -> float:
    """Feature-form linear CKA from ``_stats`` (Kornblith et al. notebook).

    Biased: HSIC(X, Y) ~ ||Yc^T Xc||_F^2 = tr(Kx H Ky H) with Kx = X X^T.
    Debiased: the unbiased HSIC U-statistic (Song et al. 2012), whose n x n form
    tr(K~x K~y) + 1^T K~x 1 1^T K~y 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~x K~y 1 (zero-diagonal
    K~) equals, on centred features, the expression below up to a factor that cancels.
    """
    n, xy, xx, yy = st["n"], st["xy"], st["xx"], st["yy"]
    if debiased:
        if n < 4:
            raise ValueError(f"debiased CKA needs n >= 4 rows, got {n}")
        rx, ry = st["rx"], st["ry"]  # diagonals of the Gram matrices
        nx, ny = rx.sum(), ry.sum()

        def unbiased(dot, ra, rb, na, nb):
            return dot - n / (n - 2) * (ra @ rb) + na * nb / ((n - 1) * (n - 2))

        xy, xx, yy = unbiased(xy, rx, ry, nx, ny), unbiased(xx, rx, rx, nx, nx), \
            unbiased(yy, ry, ry, ny, ny)
        if not (xx > 0 and yy > 0):
            return math.nan
    return float(xy / (xx.sqrt() * yy.sqrt()))


def _cka(X: torch.Tensor, Y: torch.Tensor, debiased: bool) -> float:
    return _cka_from(_stats(X, Y), debiased)


def linear_cka(X, Y, debiased: bool = False) -> float:
    """Linear CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X, Y.

    ``debiased=True`` uses the unbiased HSIC estimator: biased CKA is inflated at small n
    (about 0.2 for independent 64-d Gaussians at n = 256). Returns nan when a debiased
    self-HSIC is not positive. Cost O(n d^2).
    """
    X, Y = _pair(X, Y)
    return _cka(X, Y, debiased)


def cosine_cka(Z1, Z2) -> float:
    """CKA with cosine kernels S = U U^T: linear CKA of the row-normalised embeddings.

    It is the cosine of the angle between H S1 H and H S2 H, the quantity bounded by
    ``cka_bounds(similarity_distance(Z1, Z2))``.
    """
    Z1, Z2 = _pair(Z1, Z2)
    return _cka(_rownorm(Z1), _rownorm(Z2), debiased=False)


def _rho_from(st: dict) -> float:
    """||H(U U^T - V V^T)H||_F / ||H U U^T H||_F in feature form (Uc, Vc column-centred):
    ||Uc Uc^T - Vc Vc^T||_F^2 = ||Uc^T Uc||_F^2 + ||Vc^T Vc||_F^2 - 2 ||Uc^T Vc||_F^2."""
    uu, vv, uv = st["xx"], st["yy"], st["xy"]
    return float((uu + vv - 2 * uv).clamp_min(0).sqrt() / uu.sqrt())


def _rho(U: torch.Tensor, V: torch.Tensor) -> float:
    return _rho_from(_stats(U, V))


def similarity_distance(Z1, Z2) -> float:
    """rho = ||H(S1 - S2)H||_F / ||H S1 H||_F, S = cosine-similarity matrix, H centring.

    The distance between the (centred) similarity matrices that the theory bounds; Z1 is
    the reference (CL). Computed in feature form, O(n d^2): no n x n matrix is built.
    """
    Z1, Z2 = _pair(Z1, Z2)
    return _rho(_rownorm(Z1), _rownorm(Z2))


def cka_bounds(rho: float) -> tuple[float, float]:
    """Lower bounds on cosine-kernel CKA implied by rho: (sqrt(1 - rho^2), (1-rho)/(1+rho)).

    ||A - B|| <= rho ||A|| bounds the sine of the angle between A = HS1H and B = HS2H by
    rho, hence cos >= sqrt(1 - rho^2) >= (1 - rho)/(1 + rho) (the paper's form). Both are
    vacuous, reported as nan, when rho >= 1 (or rho is nan).
    """
    rho = float(rho)
    if not rho < 1:
        return math.nan, math.nan
    return math.sqrt(1 - rho * rho), (1 - rho) / (1 + rho)


def _rdm_triu(X: torch.Tensor) -> torch.Tensor:
    """Strict upper triangle of the RDM 1 - cos(x_i, x_j), row-major like scipy's pdist."""
    U = _rownorm(X)
    n = U.shape[0]
    mask = torch.ones(n, n, dtype=torch.bool, device=U.device).triu_(1)
    return (U @ U.T).masked_select(mask).neg_().add_(1.0)


def _average_ranks(a: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties given their average rank (scipy's rankdata
    "average"); one parallel sort, the tie pass only when there are ties."""
    s, order = torch.sort(a)
    m = a.numel()
    new = torch.ones(m, dtype=torch.bool, device=a.device)
    torch.ne(s[1:], s[:-1], out=new[1:])
    del s
    ranks = torch.empty(m, dtype=torch.float64, device=a.device)
    if bool(new.all()):
        ranks[order] = torch.arange(1, m + 1, dtype=torch.float64, device=a.device)
        return ranks
    starts = new.nonzero()[:, 0]
    ends = torch.cat([starts[1:], starts.new_tensor([m])])
    avg = 0.5 * (starts + ends + 1).to(torch.float64)  # mean of ranks starts+1 .. ends
    ranks[order] = torch.repeat_interleave(avg, ends - starts)
    return ranks


def rsa(X, Y, method: str = "spearman", max_rows: int = 5000) -> float:
    """Representational similarity: correlation of the strict upper triangles of the RDMs.

    RDM = 1 - cosine similarity between rows; ``method`` is "spearman" (default) or
    "pearson". The RDMs are n x n, so more than ``max_rows`` rows is refused: subsample
    (the same rows for both models), e.g. with ``compare(..., rsa_rows=...)``. Spearman
    ranks the n(n-1)/2 pairs (inherently O(n^2 log n)); Pearson is computed in feature form
    (O(n d^2), no n x n matrix), so it is not limited by ``max_rows``.
    """
    if method not in RSA_METHODS:
        raise ValueError(f"unknown RSA method {method!r}: allowed {', '.join(RSA_METHODS)}")
    X, Y = _pair(X, Y)
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"rsa needs n >= 3 rows (>= 3 pairs), got {n}")
    if method == "pearson":
        return _rsa_pearson(_rownorm(X), _rownorm(Y))
    if n > max_rows:
        raise ValueError(
            f"rsa on {n} rows would build two {n}x{n} RDMs; more than max_rows={max_rows} is "
            "refused: subsample the same rows of both (e.g. compare(..., rsa_rows=2000)) "
            "or raise max_rows knowingly")
    a = _rdm_triu(X)
    if bool(torch.isnan(a).any()):
        return math.nan
    a = _average_ranks(a)
    b = _rdm_triu(Y)
    if bool(torch.isnan(b).any()):
        return math.nan
    b = _average_ranks(b)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def _rsa_pearson(U: torch.Tensor, V: torch.Tensor) -> float:
    """Pearson correlation of the strict upper triangles of 1 - U U^T and 1 - V V^T (rows
    of U, V unit or zero) in feature form. With S = U U^T, over the m = n(n-1)/2 pairs:
    sum S_ij = (||1^T U||^2 - tr S) / 2, sum S_ij^2 = (||U^T U||^2 - ||diag S||^2) / 2,
    sum S_ij T_ij = (||U^T V||^2 - diag S . diag T) / 2; 1 - S has the same correlation."""
    n = U.shape[0]
    m = n * (n - 1) / 2
    du, dv = (U * U).sum(1), (V * V).sum(1)
    su, sv = U.sum(0), V.sum(0)
    s1 = (su @ su - du.sum()) / 2
    t1 = (sv @ sv - dv.sum()) / 2
    s2 = (_sq_gram(U) - du @ du) / 2
    t2 = (_sq_gram(V) - dv @ dv) / 2
    st = (_fro2(V.T @ U) - du @ dv) / 2
    cov = st - s1 * t1 / m
    var = (s2 - s1 * s1 / m) * (t2 - t1 * t1 / m)
    return float(cov / var.sqrt()) if var > 0 else math.nan


def _named_params(model, prefixes):
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    return {name: p for name, p in model.named_parameters()
            if prefixes is None or name.startswith(tuple(prefixes))}


def parameter_distance(model_a: torch.nn.Module, model_b: torch.nn.Module,
                       prefixes: str | tuple[str, ...] | None = None) -> dict[str, float]:
    """Weight-space distance between two models of the same architecture.

    param_dist = ||theta_a - theta_b|| / ||theta_a|| over all parameters (one flat vector);
    param_dist_layer = mean over parameter tensors of ||w_a - w_b||_F / (0.5 (||w_a||_F +
    ||w_b||_F)), skipping tensors that are zero in both (the reference's per-layer form).
    ``prefixes`` keeps only parameters whose name starts with one of them (e.g.
    ("backbone.", "projector.") for the encoder without a CE head); buffers are not
    parameters and are ignored. Raises ValueError when names or shapes differ.
    """
    pa, pb = _named_params(model_a, prefixes), _named_params(model_b, prefixes)
    if pa.keys() != pb.keys():
        only_a, only_b = sorted(pa.keys() - pb.keys()), sorted(pb.keys() - pa.keys())
        raise ValueError(f"models have different parameters: only in a {only_a[:5]}, "
                         f"only in b {only_b[:5]}")
    bad = [(k, tuple(pa[k].shape), tuple(pb[k].shape)) for k in pa
           if pa[k].shape != pb[k].shape]
    if bad:
        raise ValueError(f"parameter shapes differ (name, a, b): {bad[:5]}")
    if not pa:
        raise ValueError(f"no parameters to compare (prefixes={prefixes!r})")
    with torch.no_grad():
        rows, device = [], next(iter(pa.values())).device
        for k in pa:
            wa = pa[k].detach().to(torch.float64)
            wb = pb[k].detach().to(device=wa.device, dtype=torch.float64)
            rows.append(torch.stack([(wa - wb).norm(), wa.norm(), wb.norm()]).to(device))
        diff, na, nb = torch.stack(rows).cpu().T  # one host transfer
    total_diff, total_a = float(diff.pow(2).sum().sqrt()), float(na.pow(2).sum().sqrt())
    if total_a > 0:
        global_dist = total_diff / total_a
    else:
        global_dist = 0.0 if total_diff == 0 else math.inf
    keep = (na > 0) | (nb > 0)
    layer = float((diff[keep] / (0.5 * (na[keep] + nb[keep]))).mean()) if keep.any() else 0.0
    return {"param_dist": global_dist, "param_dist_layer": layer}


def weight_movement(model: torch.nn.Module, init: torch.nn.Module) -> float:
    """||W - W0||_F / ||W0||_F over the weight matrices (conv, linear: ndim >= 2) only.

    BN scales start at 1 and biases at 0, so a relative distance that included them would
    be dominated by tensors that say nothing about whether the network learned features.
    """
    cur = {k: p for k, p in model.named_parameters() if p.ndim >= 2}
    ref = {k: p for k, p in init.named_parameters() if p.ndim >= 2}
    if cur.keys() != ref.keys() or not cur:
        raise ValueError("weight_movement needs two models with the same weight matrices")
    with torch.no_grad():
        diff = sum((cur[k].double() - ref[k].to(cur[k].device).double()).pow(2).sum() for k in cur)
        base = sum(ref[k].double().pow(2).sum() for k in ref)
        return float(diff.sqrt() / base.sqrt().to(diff.device))


def compare(X_ref, X_other, rsa_rows: int | None = None, seed: int = 0,
            rsa_method: str = "spearman") -> dict[str, float]:
    """All representation metrics of ``X_other`` against the reference ``X_ref`` (CL).

    Keys are ``clnscl.records.ALIGNMENT_METRICS``: cka, cka_debiased, rsa, rho, cka_cos,
    bound_sqrt, bound_ratio. RSA runs on ``rsa_rows`` rows drawn without replacement with
    ``np.random.default_rng(seed)`` (the same rows for both; all rows when None or >= n,
    and then ``rsa``'s max_rows limit applies).
    """
    X, Y = _pair(X_ref, X_other)
    n = X.shape[0]
    raw, cos = _stats(X, Y), _stats(_rownorm(X), _rownorm(Y))  # each product once
    rho = _rho_from(cos)
    bound_sqrt, bound_ratio = cka_bounds(rho)
    if rsa_rows is not None and rsa_rows < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=rsa_rows, replace=False))
        idx = torch.from_numpy(idx).to(X.device)
        Xr, Yr = X[idx], Y[idx]
    else:
        Xr, Yr = X, Y
    return {
        "cka": _cka_from(raw, debiased=False),
        "cka_debiased": _cka_from(raw, debiased=True),
        "rsa": rsa(Xr, Yr, method=rsa_method),
        "rho": rho,
        "cka_cos": _cka_from(cos, debiased=False),
        "bound_sqrt": bound_sqrt,
        "bound_ratio": bound_ratio,
    }

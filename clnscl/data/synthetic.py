"""Built-in synthetic texture data set: 100 classes in 10 super-classes, generated on the fly.

The default data set of the project. It is deterministic (same ``seed`` -> bit-identical
uint8 tensors on the same platform and torch build), needs no download, and is generated
by vectorised torch code (one batch per class, no per-image Python loop): 50k 32x32 images
take a few seconds on a CPU. The generation seed is fixed per data set (``SYNTHETIC_SEED``
= 0), independent of the trial seed, so every trial sees the same data set; train and test
images are drawn from different random streams of the same class prototypes.

What defines a class (class ``c``, named ``"tex{c:02d}"``)
-------------------------------------------------------
* **Pattern family** (the super-class, ``c // 10``): 0 sine grating, 1 square grating,
  2 plaid (two gratings 60 degrees apart), 3 checkerboard, 4 elliptic rings, 5 spokes
  (pinwheel), 6 dot lattice, 7 hexagonal lattice, 8 wavy stripes, 9 oriented band-pass
  noise. Families are related in graded ways (sine/square, plaid/checker/dots/hex), so
  some super-classes are closer to each other than others, as in CIFAR-100.
* **Orientation** (``c % 5``): 0, 22.5, 45, 67.5 or 90 degrees. All class orientations lie
  in [0, 90] degrees and every pattern is made 180-degree (not 90-degree) symmetric
  (anisotropic lattices, stretched rings), so that a horizontal flip (theta -> 180 - theta)
  never maps one class onto another.
* **Spatial frequency** (``(c % 10) // 5``): 3 or 6 cycles per image width (spokes: 6 or
  12 spokes). Classes differing only in frequency are the closest pairs: random resized
  crops zoom by up to ~3.5x, so this cue is only partly invariant to the augmentation.
* **Region shape** (weak cue): the textured region is an ellipse, a rounded box or a
  diamond, drawn per class from the prototype stream of ``seed``.

Within-class variation (per image, from the instance stream of ``seed`` and ``split``)
------------------------------------------------------------------------------------
Phase(s) of every grating component and the pattern centre (position), spatial scale
(x0.8..x1.25), rotation jitter (+-6 degrees), texture amplitude/contrast, foreground colours
(a random mean colour near grey and a random colour axis dominated by a random-sign
luminance component, so the texture survives grayscale), position, size, aspect and
rotation of the textured region, a random background colour near grey, and per-pixel
Gaussian noise of a random level. Colour is never a class cue (it is random per image).

Why the nuisance colours are mild (measured, ``benchmarks/science_check.py`` era): with
per-image colours spread over the whole cube and low-frequency clutter gratings, every
image carried an instance signature that survives SimCLR's colour jitter, and CL learned
it instead of the texture: after 768 steps (C=8, B=32, SGD) CL's kNN accuracy was still
at the untrained model's (0.29, chance 0.125) while SupCon's rose. With the milder
colours and no clutter, CL overtakes the untrained model (+0.15 kNN after 256 steps at
128 images per class), which is what a study of *learned* alignment needs. A linear read-out of
raw pixels cannot find the class (random phases average every grating out); the class is
in the local structure (orientation, frequency, pattern type) that survives crops, flips,
colour jitter and grayscale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

SYNTHETIC_SEED = 0
N_SUPER = 10
N_SUB = 10
N_CLASSES = N_SUPER * N_SUB
FAMILIES = ("sine", "square", "plaid", "checker", "rings", "spokes", "dots", "hex", "wavy",
            "noise")
ORIENTATIONS_DEG = (0.0, 22.5, 45.0, 67.5, 90.0)
FREQUENCIES = (3.0, 6.0)  # cycles per image width
SHAPES = ("ellipse", "box", "diamond")
_SHAPE_POWER = (2.0, 6.0, 1.0)  # superellipse exponents of SHAPES
_SPLITS = {"train": 1, "test": 2}

# Per-channel mean/std (in [0,1] units) of the default train split (100 classes x 500,
# 32x32, seed 0), measured once and fixed so that every class subset uses the same
# constants (as CIFAR's published constants do).
SYNTHETIC_MEAN = (0.4998, 0.5002, 0.5000)
SYNTHETIC_STD = (0.1041, 0.1041, 0.1042)


def class_name(c: int) -> str:
    return f"tex{c:02d}"


def class_spec(c: int, seed: int = SYNTHETIC_SEED) -> dict:
    """The prototype of class ``c``: family, orientation (deg), frequency, region shape."""
    if not 0 <= c < N_CLASSES:
        raise ValueError(f"invalid class {c}: allowed 0..{N_CLASSES - 1}")
    fam, sub = divmod(c, N_SUB)
    return {
        "class": c,
        "name": class_name(c),
        "super_class": fam,
        "family": FAMILIES[fam],
        "orientation_deg": ORIENTATIONS_DEG[sub % 5],
        "frequency": FREQUENCIES[sub // 5],
        "shape": SHAPES[_class_shapes(seed)[c]],
    }


def _class_shapes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    return rng.integers(0, len(SHAPES), size=N_CLASSES)


def _stream(seed: int, split: str, c: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, _SPLITS[split], c]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


def _u(g, n, lo, hi, *extra):
    return lo + (hi - lo) * torch.rand(n, *extra, generator=g)


def _waves(kx, ky, p, w, ca, sa, cx, cy, coords):
    """sum_j w_j sin(kx_j xr + ky_j yr + p_j) as (n, S, S), separably (one small bmm).

    (xr, yr) are image coordinates rotated by alpha (ca, sa = cos, sin) about (cx, cy);
    kx, ky, p, w are (n, m); ca, sa, cx, cy are (n,). A plane wave is separable in x and y
    (sin(a + b) = sin a cos b + cos a sin b), so no full-size sin is evaluated.
    """
    ca, sa, cx, cy = ca[:, None], sa[:, None], cx[:, None], cy[:, None]
    ax = kx * ca - ky * sa
    ay = kx * sa + ky * ca
    b = p - ax * cx - ay * cy
    ux = ax[:, :, None] * coords  # (n, m, S) along x
    vy = ay[:, :, None] * coords + b[:, :, None]  # (n, m, S) along y
    w = w[:, :, None]
    u = torch.cat([w * torch.sin(ux), w * torch.cos(ux)], 1)
    v = torch.cat([torch.cos(vy), torch.sin(vy)], 1)
    return torch.bmm(v.transpose(1, 2), u)  # [n, y, x]


def _texture(fam, k, ph, rot, g, n, freq, coords, X, Y):
    """Texture of family ``fam``: values in about [-1, 1], (n, S, S).

    k (n,) angular frequency; ph (n, 2) phases; rot = (cos a, sin a, cx, cy) of the pattern
    frame. Plane-wave families go through ``_waves``; the others use full coordinate maps.
    """
    ca, sa, cx, cy = rot
    p1, p2 = ph[:, 0], ph[:, 1]
    z = torch.zeros_like(k)
    h = math.pi / 2
    s3 = math.sqrt(3) / 2

    def waves(*specs):  # specs: (kx, ky, p, w) with (n,) tensors or floats
        cols = [torch.stack([torch.as_tensor(v, dtype=torch.float32).expand(n) for v in s], 1)
                for s in specs]
        kx, ky, p, w = (torch.stack([c[:, i] for c in cols], 1) for i in range(4))
        return _waves(kx, ky, p, w, ca, sa, cx, cy, coords)

    if fam == 0:  # sine grating
        return waves((k, z, p1, 1.0))
    if fam == 1:  # square grating
        return torch.tanh(2.5 * waves((k, z, p1, 1.0))) / math.tanh(2.5)
    if fam == 2:  # plaid: theta and theta + 60 deg
        return waves((k, z, p1, 0.5), (0.5 * k, s3 * k, p2, 0.5))
    if fam == 3:  # checkerboard, rectangular cells: sin(k xr + p1) sin(0.7 k yr + p2)
        return torch.tanh(3.0 * waves((k, -0.7 * k, p1 - p2 + h, 0.5),
                                      (k, 0.7 * k, p1 + p2 + h, -0.5)))
    if fam == 6:  # anisotropic dot lattice: cos(k xr + p1) + cos(0.6 k yr + p2)
        return torch.tanh(3.0 * (waves((k, z, p1 + h, 1.0), (z, 0.6 * k, p2 + h, 1.0)) - 0.8))
    if fam == 7:  # hexagonal spot lattice, stretched along yr
        v = waves((k, z, p1 + h, 1.0), (-0.5 * k, 0.7 * s3 * k, p2 + h, 1.0),
                  (-0.5 * k, -0.7 * s3 * k, -p1 - p2 + h, 1.0))
        return (v - 0.75) / 1.5
    if fam == 9:  # oriented band-pass noise: m gratings near theta and k, random phases
        m = 6
        dth = 0.2 * torch.randn(n, m, generator=g)
        km = k[:, None] * torch.exp(0.12 * torch.randn(n, m, generator=g))
        pm = _u(g, n, 0, 2 * math.pi, m)
        w = torch.full((n, m), 1.0 / math.sqrt(m / 2))
        return _waves(km * torch.cos(dth), km * torch.sin(dth), pm, w, ca, sa, cx, cy, coords)
    # families that need full coordinate maps
    col = lambda t: t[:, None, None]
    dx, dy = X - col(cx), Y - col(cy)
    xr = col(ca) * dx + col(sa) * dy
    yr = col(ca) * dy - col(sa) * dx
    if fam == 4:  # elliptic rings around a random centre
        r = torch.sqrt(xr * xr + (0.55 * yr) ** 2 + 1e-6)
        return torch.sin(col(k) * r + col(p1))
    if fam == 5:  # spokes; integer count so the pattern is continuous
        return torch.sin(round(2 * freq) * torch.atan2(0.6 * yr, xr) + col(p1))
    if fam == 8:  # wavy stripes (phase-modulated grating)
        inner = waves((z, 0.45 * k, p2, 1.8))
        return torch.sin(col(k) * xr + inner + col(p1))
    raise ValueError(fam)


def _generate_class(c: int, n: int, size: int, seed: int, split: str, shape: int) -> torch.Tensor:
    """All ``n`` images of class ``c`` at once: float (n, 3, size*size) in 0..255 units,
    unclamped, with +0.5 folded in so that truncation to uint8 rounds."""
    g = _stream(seed, split, c)
    fam, sub = divmod(c, N_SUB)
    theta = math.radians(ORIENTATIONS_DEG[sub % 5])
    freq = FREQUENCIES[sub // 5]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    Y, X = torch.meshgrid(coords, coords, indexing="ij")  # X to the right, Y down
    X, Y = X[None], Y[None]

    def col(t):  # (n,) -> (n,1,1)
        return t[:, None, None]

    # --- texture: orientation + jitter, scale jitter, centre (position), phases
    alpha = theta + math.radians(6.0) * _u(g, n, -1, 1)
    k = math.pi * freq * torch.exp(_u(g, n, math.log(0.8), math.log(1.25)))
    cx, cy = _u(g, n, -0.5, 0.5), _u(g, n, -0.5, 0.5)
    ph = _u(g, n, 0, 2 * math.pi, 2)
    t = _texture(fam, k, ph, (torch.cos(alpha), torch.sin(alpha), cx, cy), g, n, freq,
                 coords, X, Y)

    # --- foreground colours: random mean, random axis with random-sign luminance part
    amp = _u(g, n, 0.45, 1.0)
    fg_mean = _u(g, n, 0.4, 0.6, 3)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    axis = 0.8 * sign[:, None] / math.sqrt(3) + 0.045 * torch.randn(n, 3, generator=g)
    axis = axis / axis.norm(dim=1, keepdim=True) * (0.32 * amp)[:, None]

    # --- background: a random colour near grey
    bg = _u(g, n, 0.38, 0.62, 3)

    # --- region mask: superellipse of the class shape, random placement/size/aspect/rotation
    p = _SHAPE_POWER[shape]
    mx, my = col(_u(g, n, -0.35, 0.35)), col(_u(g, n, -0.35, 0.35))
    rad = col(_u(g, n, 0.65, 1.15))
    asp = col(torch.exp(_u(g, n, -0.25, 0.25)))
    rot = _u(g, n, 0, math.pi)
    cr, sr = col(torch.cos(rot)), col(torch.sin(rot))
    ux = (cr * (X - mx) + sr * (Y - my)) / (rad * asp)
    uy = (cr * (Y - my) - sr * (X - mx)) * (asp / rad)
    if p == 2.0:
        d = torch.sqrt(ux * ux + uy * uy)
    elif p == 1.0:
        d = ux.abs() + uy.abs()
    else:
        d = (ux.abs() ** p + uy.abs() ** p + 1e-12) ** (1.0 / p)
    m = torch.sigmoid((1.0 - d) * 14.0)

    # --- composite in one batched matmul: colour coefficients (n, 3, 3) x maps (n, 3, S*S)
    maps = torch.stack([1.0 - m, m, m * t], 1).view(n, 3, -1)
    coef = torch.stack([bg, fg_mean, axis], 2) * 255.0
    coef[:, :, 0] += 0.5  # rounding offset: (1 - m) + m == 1
    coef[:, :, 1] += 0.5
    # --- plus per-pixel Gaussian noise of a random level per image
    sigma = _u(g, n, 0.01, 0.06) * 255.0
    noise = torch.randn(n, 3, size * size, generator=g).mul_(sigma[:, None, None])
    return torch.baddbmm(noise, coef, maps)


def make_synthetic(n_per_class: int, n_classes: int = N_CLASSES, image_size: int = 32,
                   seed: int = SYNTHETIC_SEED, split: str = "train",
                   classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate the synthetic images: ``(x uint8 (N,3,S,S), y int64 (N,))`` on the CPU.

    ``classes`` (default ``range(n_classes)``) selects which classes to generate; every class
    has its own random stream, so a class's images do not depend on which other classes
    are generated. Labels are the original class ids; images come in class blocks.
    """
    if split not in _SPLITS:
        raise ValueError(f"invalid split={split!r}: allowed {', '.join(_SPLITS)}")
    if not 1 <= n_classes <= N_CLASSES:
        raise ValueError(f"invalid n_classes={n_classes}: allowed 1..{N_CLASSES}")
    if n_per_class < 1:
        raise ValueError(f"invalid n_per_class={n_per_class}: allowed an integer >= 1")
    if image_size < 8:
        raise ValueError(f"invalid image_size={image_size}: allowed an integer >= 8")
    classes = list(range(n_classes)) if classes is None else [int(c) for c in classes]
    for c in classes:
        if not 0 <= c < N_CLASSES:
            raise ValueError(f"invalid class {c}: allowed 0..{N_CLASSES - 1}")
    shapes = _class_shapes(seed)
    xs = torch.empty(len(classes) * n_per_class, 3, image_size, image_size, dtype=torch.uint8)
    for i, c in enumerate(classes):  # one vectorised batch per class
        img = _generate_class(c, n_per_class, image_size, seed, split, int(shapes[c]))
        block = xs[i * n_per_class:(i + 1) * n_per_class]
        block.copy_(img.clamp_(0, 255).view(block.shape))  # truncation; +0.5 was folded in
    y = torch.tensor(classes, dtype=torch.int64).repeat_interleave(n_per_class)
    return xs, y


__all__ = [
    "FAMILIES",
    "N_CLASSES",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_SEED",
    "SYNTHETIC_STD",
    "class_name",
    "class_spec",
    "make_synthetic",
]

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from clnscl.augment import N_PARAMS, PARAM_NAMES, SimCLRAugment

COL = {n: i for i, n in enumerate(PARAM_NAMES)}


def _images(n=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _identity_params(n):
    p = torch.zeros(n, N_PARAMS)
    p[:, COL["crop_w"]] = 1.0
    p[:, COL["crop_h"]] = 1.0
    p[:, COL["brightness"]] = 1.0
    p[:, COL["contrast"]] = 1.0
    p[:, COL["saturation"]] = 1.0
    return p


def test_determinism_same_generator_state():
    aug, x = SimCLRAugment(32), _images()
    v1, p1 = aug(x, torch.Generator().manual_seed(7))
    v2, p2 = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(p1, p2) and torch.equal(v1, v2)
    v3, p3 = aug(x, torch.Generator().manual_seed(8))
    assert not torch.equal(p1, p3) and not torch.equal(v1, v3)


def test_variety_within_batch_and_between_calls():
    aug, x = SimCLRAugment(32), _images(64)
    g = torch.Generator().manual_seed(0)
    va, pa = aug(x, g)
    vb, pb = aug(x, g)
    assert len(torch.unique(pa[:, COL["crop_x0"]])) == 64  # every sample its own crop
    assert len(torch.unique(pa[:, COL["crop_w"]])) == 64
    jit = pa[:, COL["jitter"]] > 0
    assert len(torch.unique(pa[jit, COL["brightness"]])) == int(jit.sum())
    assert not torch.equal(pa, pb) and not torch.equal(va, vb)
    # two views of the same image differ
    assert (va - vb).abs().flatten(1).amax(1).min() > 0


def test_output_shape_dtype_device_and_params():
    aug = SimCLRAugment(24, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    x = _images(5, size=32)
    v, p = aug(x, torch.Generator().manual_seed(0))
    assert v.shape == (5, 3, 24, 24) and v.dtype == torch.float32 and v.device == x.device
    assert p.shape == (5, N_PARAMS) and p.dtype == torch.float32 and p.device.type == "cpu"
    assert aug.normalize(x).shape == (5, 3, 24, 24)
    with pytest.raises(ValueError, match="params"):
        aug.apply(x, p[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    aug, x = SimCLRAugment(32), _images(32)
    p = aug.sample_params(32, torch.Generator().manual_seed(3))
    vc = aug.apply(x, p)
    vg = aug.apply(x.cuda(), p)
    assert vg.device.type == "cuda"
    torch.testing.assert_close(vg.cpu(), vc, atol=1e-4, rtol=1e-4)


def test_parameter_statistics():
    aug = SimCLRAugment(32)
    n = 20000
    p = aug.sample_params(n, torch.Generator().manual_seed(0))
    se = lambda q: 4 * math.sqrt(q * (1 - q) / n)
    assert abs(p[:, COL["flip"]].mean() - 0.5) < se(0.5)
    assert abs(p[:, COL["gray"]].mean() - 0.2) < se(0.2)
    assert abs(p[:, COL["jitter"]].mean() - 0.8) < se(0.8)
    w, h = p[:, COL["crop_w"]], p[:, COL["crop_h"]]
    x0, y0 = p[:, COL["crop_x0"]], p[:, COL["crop_y0"]]
    eps = 1e-5
    assert (w * h >= 0.08 - eps).all() and (w * h <= 1 + eps).all()
    assert (w / h >= 3 / 4 - eps).all() and (w / h <= 4 / 3 + eps).all()
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 1 + eps).all() and (y0 + h <= 1 + eps).all()
    area = w * h  # area fraction is ~uniform on [0.08, 1] except tries rejected at the top
    assert 0.45 < area.mean() < 0.56
    jit = p[:, COL["jitter"]] > 0
    for name, lo, hi in (("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4),
                         ("saturation", 0.6, 1.4), ("hue", -0.1, 0.1)):
        v = p[jit, COL[name]]
        assert v.min() >= lo and v.max() <= hi and v.std() > (hi - lo) / 4
        ident = 0.0 if name == "hue" else 1.0
        assert (p[~jit, COL[name]] == ident).all()
    # flips are not locked to any other parameter
    assert abs(p[p[:, COL["gray"]] > 0, COL["flip"]].mean() - 0.5) < 0.05


def test_identity_params_reproduce_normalised_input():
    aug, x = SimCLRAugment(32, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3)), _images(8)
    p = _identity_params(8)
    torch.testing.assert_close(aug.apply(x, p), aug.normalize(x), atol=1e-5, rtol=0)
    p[:, COL["jitter"]] = 1.0  # jitter on, identity factors: still the input (HSV round trip)
    torch.testing.assert_close(aug.apply(x, p), aug.normalize(x), atol=1e-4, rtol=0)
    p = _identity_params(8)
    p[:, COL["flip"]] = 1.0
    torch.testing.assert_close(aug.apply(x, p), aug.normalize(x).flip(-1), atol=1e-5, rtol=0)


def test_crop_geometry_matches_interpolate():
    aug, x = SimCLRAugment(32, mean=(0, 0, 0), std=(1, 1, 1)), _images(4)
    p = _identity_params(4)
    p[:, COL["crop_x0"]] = 0.5
    p[:, COL["crop_y0"]] = 0.25
    p[:, COL["crop_w"]] = 0.5
    p[:, COL["crop_h"]] = 0.5
    ref = torch.nn.functional.interpolate(x[:, :, 8:24, 16:32].float() / 255, size=(32, 32),
                                          mode="bilinear", align_corners=False)
    out = aug.apply(x, p)
    # interior: the same bilinear up-sampling; the outermost output pixels of a continuous
    # box read up to half a pixel beyond it, where crop-then-resize clamps to the crop
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    # the right edge of this box is the image edge: there both clamp the same way
    torch.testing.assert_close(out[..., 1:-1, -1], ref[..., 1:-1, -1], atol=1e-5, rtol=0)


def test_grayscale_has_equal_channels():
    aug, x = SimCLRAugment(32, mean=(0, 0, 0), std=(1, 1, 1)), _images(6)
    g = torch.Generator().manual_seed(5)
    p = aug.sample_params(6, g)
    p[:, COL["gray"]] = 1.0
    v = aug.apply(x, p)
    assert torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 1], v[:, 2])
    p[:, COL["gray"]] = 0.0
    v = aug.apply(x, p)
    assert not torch.equal(v[:, 0], v[:, 1])


def test_colour_jitter_matches_torchvision_formulas():
    aug, x = SimCLRAugment(32, mean=(0, 0, 0), std=(1, 1, 1)), _images(6)
    factors = [(0.7, 1.3, 0.8, 0.05), (1.3, 0.7, 1.2, -0.08), (1.0, 1.0, 1.0, 0.1),
               (0.6, 1.4, 0.6, -0.1), (1.4, 0.6, 1.4, 0.02), (1.1, 0.9, 0.0, 0.0)]
    p = _identity_params(6)
    p[:, COL["jitter"]] = 1.0
    p[:, COL["brightness"]:COL["hue"] + 1] = torch.tensor(factors)
    out = aug.apply(x, p)
    for i, (b, c, s, h) in enumerate(factors):
        ref = x[i].float() / 255
        ref = TF.adjust_brightness(ref, b)
        ref = TF.adjust_contrast(ref, c)
        ref = TF.adjust_saturation(ref, s)
        ref = TF.adjust_hue(ref, h)
        torch.testing.assert_close(out[i], ref, atol=2e-4, rtol=0)


def test_batch_equals_per_sample_application():
    aug, x = SimCLRAugment(32), _images(10)
    p = aug.sample_params(10, torch.Generator().manual_seed(11))
    whole = aug.apply(x, p)
    for i in (0, 3, 9):
        torch.testing.assert_close(aug.apply(x[i:i + 1], p[i:i + 1])[0], whole[i], atol=1e-5,
                                   rtol=0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="crop_scale"):
        SimCLRAugment(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="p_gray"):
        SimCLRAugment(p_gray=1.5)
    with pytest.raises(ValueError, match="shape"):
        SimCLRAugment().apply(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), _identity_params(2))
    with pytest.raises(ValueError, match="uint8"):
        SimCLRAugment().apply(torch.zeros(2, 3, 8, 8), _identity_params(2))


# ---------------------------------------------------------------- reference implementation
# The straightforward pipeline that SimCLRAugment.apply replaced (per-sample affine grid +
# grid_sample, RGB -> HSV -> RGB with the six-way case selection): the fast path must
# agree with it to float32 rounding on every kind of row.

def _ref_rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_g & ~is_r
    h = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    return torch.stack((torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc), 1)


def _ref_hsv_to_rgb(x):
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    mask = (i.unsqueeze(1) == torch.arange(6).view(1, -1, 1, 1)).to(x.dtype)
    a1 = torch.stack((v, q, p, p, t, v), 1)
    a2 = torch.stack((t, v, v, q, p, p), 1)
    a3 = torch.stack((p, p, t, v, v, q), 1)
    return torch.stack([(mask * a).sum(1) for a in (a1, a2, a3)], 1)


def _ref_gray(x):
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def reference_apply(aug, x_uint8, p):
    n, s = x_uint8.shape[0], aug.image_size
    x = x_uint8.float() / 255.0
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = p[:, 2] * (1.0 - 2.0 * p[:, 4])
    theta[:, 0, 2] = 2.0 * p[:, 0] + p[:, 2] - 1.0
    theta[:, 1, 1] = p[:, 3]
    theta[:, 1, 2] = 2.0 * p[:, 1] + p[:, 3] - 1.0
    grid = torch.nn.functional.affine_grid(theta, [n, 3, s, s], align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                        align_corners=False)
    b, c, sat, hue = (p[:, i].view(n, 1, 1, 1) for i in (6, 7, 8, 9))
    y = (x * b).clamp(0.0, 1.0)
    y = (c * y + (1.0 - c) * _ref_gray(y).mean((2, 3), keepdim=True)).clamp(0.0, 1.0)
    y = (sat * y + (1.0 - sat) * _ref_gray(y)).clamp(0.0, 1.0)
    hsv = _ref_rgb_to_hsv(y)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + hue[:, 0], 1.0)
    x = torch.where(p[:, 5].view(n, 1, 1, 1) > 0.5, _ref_hsv_to_rgb(hsv), x)
    x = torch.where(p[:, 10].view(n, 1, 1, 1) > 0.5, _ref_gray(x).expand(-1, 3, -1, -1), x)
    mean = torch.tensor(aug.mean).view(1, 3, 1, 1)
    std = torch.tensor(aug.std).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("size_in,size_out,jitter_rows,seed", [
    (32, 32, "sampled", 0), (32, 24, "sampled", 1), (16, 32, "sampled", 2),
    (32, 32, "all", 3), (32, 32, "none", 4)])
def test_fast_path_matches_reference_implementation(size_in, size_out, jitter_rows, seed):
    aug = SimCLRAugment(size_out, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                        crop_scale=(0.08, 1.0))
    x = _images(300, size=size_in, seed=seed)
    p = aug.sample_params(300, torch.Generator().manual_seed(seed))
    if jitter_rows != "sampled":
        on = jitter_rows == "all"
        g = torch.Generator().manual_seed(seed + 100)
        p[:, COL["jitter"]] = float(on)
        f = torch.rand(300, 4, generator=g)
        p[:, COL["brightness"]] = 0.6 + 0.8 * f[:, 0] if on else 1.0
        p[:, COL["contrast"]] = 0.6 + 0.8 * f[:, 1] if on else 1.0
        p[:, COL["saturation"]] = 0.6 + 0.8 * f[:, 2] if on else 1.0
        p[:, COL["hue"]] = -0.1 + 0.2 * f[:, 3] if on else 0.0
    # a few saturated and flat pixels: ties of max/min and zero chroma take other branches
    x[:5, :, :4] = 255
    x[5:10, :, :4] = 0
    x[10:15, 0] = x[10:15, 1]
    out, ref = aug.apply(x, p), reference_apply(aug, x, p)
    assert out.shape == ref.shape == (300, 3, size_out, size_out) and out.is_contiguous()
    # float32 rounding, amplified by 1/std <= 5 (values are normalised)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=0)
    if jitter_rows == "none":  # without jitter only the resampling can round differently
        torch.testing.assert_close(out, ref, atol=5e-5, rtol=0)


def test_take_where_gives_torch_where_values():
    """The arithmetic select in the hue step gives torch.where's values exactly (ties,
    zeros and negative values included)."""
    from clnscl.augment import _take_where

    g = torch.Generator().manual_seed(3)
    dst = torch.randn(64, 1, 8, 8, generator=g)
    src = torch.randn(64, 1, 8, 8, generator=g)
    dst[:8] = 0.0
    src[8:16] = dst[8:16]
    cond = torch.rand(64, 1, 8, 8, generator=g) > 0.5
    want = torch.where(cond, src, dst)
    got = _take_where(dst.clone(), cond, src)
    assert torch.equal(got, want)

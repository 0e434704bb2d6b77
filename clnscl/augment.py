"""SimCLR augmentations for a whole batch at once, on the batch's device.

The pipeline of SimCLR on CIFAR (as in SCIENCE.md section 6) applied to uint8 (N, 3, H, W)
tensors without any per-image Python loop or PIL: random resized crop (per-sample bilinear
resampling of a box, horizontal flip folded into it), colour jitter
with probability ``p_jitter``, grayscale with probability ``p_gray``, normalisation.

All randomness is drawn in :meth:`SimCLRAugment.sample_params` from an explicit
``torch.Generator`` (one ``torch.rand`` call of fixed shape per batch), so identical
generator state gives identical parameters and identical views on any device. The
parameter matrix (one row per sample, columns ``PARAM_NAMES``) is what the trainer
fingerprints to prove that coupled models saw the same views.

Differences from torchvision's ``RandomResizedCrop``/``ColorJitter`` (documented choices):

* the crop is applied as two batched matrix products (bilinear resampling of an
  axis-aligned box is separable), the same weights as ``grid_sample(mode="bilinear",
  padding_mode="border", align_corners=False)`` on the affine grid of the box;
* crop boxes are continuous (fractions of the image), not rounded to whole pixels; the
  box is sampled as torchvision does (up to 10 tries of area fraction in ``crop_scale``
  and log-uniform aspect ratio in ``crop_ratio``, falling back to the whole image), with
  the aspect ratio taken relative to a square image (all data here are square);
* the crop is resampled bilinearly without antialiasing (crops are at most the input size,
  so with output size == input size this is always an up-sampling); being continuous, the
  outermost output pixels read up to half a pixel beyond the box (border-clamped only at
  the image edge), where torchvision's crop-then-resize clamps at the box edge;
* colour jitter is applied in the fixed order brightness, contrast, saturation, hue
  (torchvision draws a random order per image); each operation follows torchvision's
  formulas for float images (clamped to [0, 1] after each), hue via RGB <-> HSV with the
  HSV -> RGB step in closed form (tests/test_augment.py pins it to the six-way form);
* grayscale uses ITU-R 601 luma (0.299, 0.587, 0.114), as torchvision does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PARAM_NAMES = ("crop_x0", "crop_y0", "crop_w", "crop_h", "flip", "jitter", "brightness",
               "contrast", "saturation", "hue", "gray")
N_PARAMS = len(PARAM_NAMES)
_CROP_TRIES = 10
# columns of the single uniform draw of sample_params
_N_UNIFORM = 2 * _CROP_TRIES + 2 + 1 + 1 + 4 + 1
_LUMA = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, 1, H, W) luma."""
    return _LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3]


def _interp_matrix(start: torch.Tensor, extent: torch.Tensor, size_in: int,
                   size_out: int) -> torch.Tensor:
    """(n, size_out, size_in) bilinear weights of ``grid_sample(mode="bilinear",
    padding_mode="border", align_corners=False)`` along one axis, for the affine map of
    output coordinate u in [-1, 1] to input coordinate ``start + extent * u`` (normalised)."""
    u = (2 * torch.arange(size_out, device=start.device, dtype=torch.float32) + 1) / size_out - 1
    g = extent[:, None] * u + start[:, None]                     # grid (as affine_grid)
    pos = ((g + 1) * size_in - 1) / 2                            # unnormalise
    pos = pos.clamp_(0, size_in - 1)                             # border padding
    k = torch.arange(size_in, device=start.device, dtype=torch.float32)
    # tent weights: 1 - frac at floor(pos), frac at floor(pos) + 1, 0 elsewhere (in place:
    # fresh large temporaries cost page faults on the CPU)
    return (pos[:, :, None] - k).abs_().neg_().add_(1.0).clamp_(min=0.0)


def _resized_crop(x_uint8: torch.Tensor, p: torch.Tensor, s: int) -> torch.Tensor:
    """Random resized crop + flip as two batched matrix products (the bilinear resampling
    of an axis-aligned box is separable): out = Ry @ x @ Rx^T, scaled to [0, 1], float32
    (n, 3, s, s), contiguous."""
    n, _, H, W = x_uint8.shape
    x0, y0, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    sign = 1.0 - 2.0 * p[:, 4]                                   # flip folded into x
    rx = _interp_matrix(2.0 * x0 + w - 1.0, w * sign, W, s)      # (n, s, W)
    ry = _interp_matrix(2.0 * y0 + h - 1.0, h, H, s).mul_(1 / 255.0)  # (n, s, H)
    ry = ry.unsqueeze(1).expand(n, 3, s, H).reshape(n * 3, s, H)
    t = torch.bmm(ry, x_uint8.to(torch.float32).view(n * 3, H, W))  # (3n, s, W)
    return torch.bmm(t.view(n, 3 * s, W), rx.transpose(1, 2)).view(n, 3, s, s)


def _gray_into(y: torch.Tensor) -> torch.Tensor:
    """(m, 3, H, W) -> (m, 1, H, W) luma, as ``_gray`` with one allocation."""
    g = y[:, 0:1] * _LUMA[0]
    return g.add_(y[:, 1:2], alpha=_LUMA[1]).add_(y[:, 2:3], alpha=_LUMA[2])


def _take_where(dst: torch.Tensor, cond: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """dst = where(cond, src, dst) in place, as arithmetic with a 0/1 mask (x * 1 and
    x * 0 are exact): the same values (up to the sign of zero), 3-6x faster on the CPU than
    ``torch.where``, whose kernel branches per element on data-dependent masks. dst and
    src must be finite."""
    m = cond.to(dst.dtype)
    return dst.mul_(1.0 - m).addcmul_(src, m)


def _jitter(y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Colour jitter of (m, 3, s, s) images in [0, 1] with factors f = (m, 4): brightness,
    contrast, saturation, hue shift, in that order, each clamped to [0, 1] (torchvision's
    float formulas). A hue rotation keeps each pixel's max and min, so HSV -> RGB is
    written as RGB = min + chroma * clamp(a |6h - c| + d, 0, 1) per channel (the six-way
    case selection of torchvision's ``_hsv2rgb`` in closed form). ``y`` is overwritten;
    operations are in place where possible (fresh large temporaries cost page faults)."""
    m = y.shape[0]
    b, c, sat, hue = (f[:, i].view(m, 1, 1, 1) for i in range(4))
    y = y.mul_(b).clamp_(0.0, 1.0)
    luma = torch.tensor(_LUMA, device=y.device, dtype=y.dtype)
    mean = (y.mean((2, 3)) @ luma).view(m, 1, 1, 1)
    y = y.mul_(c).add_((1.0 - c) * mean).clamp_(0.0, 1.0)
    gray = _gray_into(y).mul_(1.0 - sat)  # before y is scaled in place
    y = y.mul_(sat).add_(gray).clamp_(0.0, 1.0)
    del gray
    # hue: RGB -> (6 x hue, max, chroma) as torchvision's _rgb2hsv
    r, g, bl = y[:, 0:1], y[:, 1:2], y[:, 2:3]
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, bl, out=maxc)
    minc = torch.minimum(r, g)
    torch.minimum(minc, bl, out=minc)
    cr = minc.neg().add_(maxc)
    h6 = torch.sub(r, g).add_(cr, alpha=4.0)                     # max is blue
    tmp = torch.sub(bl, r).add_(cr, alpha=2.0)                   # max is green
    _take_where(h6, maxc == g, tmp)
    torch.sub(g, bl, out=tmp)                                    # max is red (first)
    _take_where(h6, maxc == r, tmp)
    h6.div_(cr.masked_fill(cr == 0, 1.0))                        # in [-1, 5]
    # hue in [0, 1) (torchvision: fmod(h6 / 6 + 1, 1)), shifted modulo 1, times 6;
    # x - floor(x) is remainder(x, 1) to the bit (one rounding of the same exact value)
    h6 = h6.div_(6.0).add_(hue)
    h6 = torch.sub(h6, torch.floor(h6, out=tmp), out=tmp).mul_(6.0)
    a = torch.tensor((1.0, -1.0, -1.0), device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    cc = torch.tensor((3.0, 2.0, 4.0), device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    d = torch.tensor((-1.0, 2.0, 2.0), device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    torch.sub(h6, cc, out=y)
    return y.abs_().mul_(a).add_(d).clamp_(0.0, 1.0).mul_(cr).add_(minc)

class SimCLRAugment:
    """Batched SimCLR augmentation; see the module docstring for the exact pipeline."""

    def __init__(self, image_size: int = 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                 crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3),
                 jitter=(0.4, 0.4, 0.4, 0.1), p_jitter: float = 0.8, p_gray: float = 0.2,
                 p_flip: float = 0.5):
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"invalid crop_scale={crop_scale}: allowed 0 < lo <= hi <= 1")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"invalid crop_ratio={crop_ratio}: allowed 0 < lo <= hi")
        b, c, s, h = jitter
        if min(b, c, s) < 0 or not 0 <= h <= 0.5:
            raise ValueError(f"invalid jitter={jitter}: allowed (b, c, s >= 0, 0 <= hue <= 0.5)")
        for name, p in (("p_jitter", p_jitter), ("p_gray", p_gray), ("p_flip", p_flip)):
            if not 0 <= p <= 1:
                raise ValueError(f"invalid {name}={p}: allowed a probability in [0, 1]")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(v) for v in std)
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.crop_ratio = tuple(float(v) for v in crop_ratio)
        self.jitter = (float(b), float(c), float(s), float(h))
        self.p_jitter, self.p_gray, self.p_flip = float(p_jitter), float(p_gray), float(p_flip)

    def __repr__(self) -> str:
        return (f"SimCLRAugment(image_size={self.image_size}, crop_scale={self.crop_scale}, "
                f"crop_ratio={self.crop_ratio}, jitter={self.jitter}, p_jitter={self.p_jitter}, "
                f"p_gray={self.p_gray}, p_flip={self.p_flip}, mean={self.mean}, std={self.std})")

    # --- parameters ---------------------------------------------------------------
    def sample_params(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw the parameters of ``n`` views: float32 (n, N_PARAMS) on the CPU.

        Columns (``PARAM_NAMES``): crop box (x0, y0, w, h) as fractions of the image width
        and height; flip (0/1); jitter applied (0/1); the effective brightness, contrast,
        saturation factors and hue shift (identity 1, 1, 1, 0 where jitter is 0); gray (0/1).
        """
        dev = generator.device
        u = torch.rand(n, _N_UNIFORM, generator=generator, device=dev, dtype=torch.float64)
        u = u.cpu()
        k = _CROP_TRIES
        lo_s, hi_s = self.crop_scale
        lo_r, hi_r = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        area = lo_s + (hi_s - lo_s) * u[:, :k]
        ratio = torch.exp(lo_r + (hi_r - lo_r) * u[:, k:2 * k])
        w_try = torch.sqrt(area * ratio)
        h_try = torch.sqrt(area / ratio)
        ok = (w_try <= 1.0) & (h_try <= 1.0)
        first = ok.to(torch.int8).argmax(1, keepdim=True)  # first valid try (0 when none)
        any_ok = ok.any(1)
        # fallback as torchvision: whole image, aspect clamped to crop_ratio (square input)
        if self.crop_ratio[0] > 1.0:  # wider than square: full width, reduced height
            fb_w, fb_h = 1.0, 1.0 / self.crop_ratio[0]
        elif self.crop_ratio[1] < 1.0:  # taller than square: full height, reduced width
            fb_w, fb_h = self.crop_ratio[1], 1.0
        else:
            fb_w, fb_h = 1.0, 1.0
        w = torch.where(any_ok, w_try.gather(1, first)[:, 0], torch.tensor(fb_w, dtype=u.dtype))
        h = torch.where(any_ok, h_try.gather(1, first)[:, 0], torch.tensor(fb_h, dtype=u.dtype))
        j = 2 * k
        x0 = u[:, j] * (1.0 - w)
        y0 = u[:, j + 1] * (1.0 - h)
        flip = (u[:, j + 2] < self.p_flip).to(u.dtype)
        jit = u[:, j + 3] < self.p_jitter
        bj, cj, sj, hj = self.jitter
        f = u[:, j + 4:j + 8]
        bright = max(0.0, 1 - bj) + (1 + bj - max(0.0, 1 - bj)) * f[:, 0]
        contr = max(0.0, 1 - cj) + (1 + cj - max(0.0, 1 - cj)) * f[:, 1]
        sat = max(0.0, 1 - sj) + (1 + sj - max(0.0, 1 - sj)) * f[:, 2]
        hue = -hj + 2 * hj * f[:, 3]
        one = torch.ones_like(bright)
        bright = torch.where(jit, bright, one)
        contr = torch.where(jit, contr, one)
        sat = torch.where(jit, sat, one)
        hue = torch.where(jit, hue, torch.zeros_like(hue))
        gray = (u[:, j + 8] < self.p_gray).to(u.dtype)
        params = torch.stack([x0, y0, w, h, flip, jit.to(u.dtype), bright, contr, sat, hue, gray],
                             1)
        return params.to(torch.float32)

    # --- application --------------------------------------------------------------
    def apply(self, x_uint8: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment ``x_uint8`` (n, 3, H, W) with ``params`` (n, N_PARAMS): float32
        (n, 3, image_size, image_size), normalised, on ``x_uint8``'s device."""
        if x_uint8.dim() != 4 or x_uint8.shape[1] != 3:
            raise ValueError(f"expected images of shape (n, 3, H, W), got {tuple(x_uint8.shape)}")
        if x_uint8.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images (0..255), got dtype {x_uint8.dtype}")
        n = x_uint8.shape[0]
        if params.shape != (n, N_PARAMS):
            raise ValueError(f"expected params of shape ({n}, {N_PARAMS}), got {tuple(params.shape)}")
        dev = x_uint8.device
        p = params.to(device=dev, dtype=torch.float32)
        x = _resized_crop(x_uint8, p, self.image_size)  # (n, 3, s, s) in [0, 1]

        # colour jitter on the rows that have it (the others are untouched, bit for bit)
        jit = p[:, 5] > 0.5
        if bool(jit.all()):
            x = _jitter(x, p[:, 6:10])
        elif bool(jit.any()):
            rows = jit.nonzero()[:, 0]
            x.index_copy_(0, rows, _jitter(x.index_select(0, rows), p.index_select(0, rows)[:, 6:10]))

        # grayscale
        gray = p[:, 10] > 0.5
        if bool(gray.any()):
            rows = gray.nonzero()[:, 0]
            x.index_copy_(0, rows, _gray_into(x.index_select(0, rows)).expand(-1, 3, -1, -1))
        # normalise into a contiguous (n, 3, s, s) tensor, same arithmetic as _norm
        out = torch.empty((n, 3, self.image_size, self.image_size), device=dev,
                          dtype=torch.float32)
        mean = torch.tensor(self.mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
        return torch.sub(x, mean, out=out).div_(std)

    def __call__(self, x_uint8: torch.Tensor, generator: torch.Generator):
        """(views, params) = (apply(x, params), params) with params = sample_params(len(x))."""
        params = self.sample_params(x_uint8.shape[0], generator)
        return self.apply(x_uint8, params), params

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Un-augmented float32 view for evaluation: resized to image_size if needed
        (bilinear, antialiased), normalised."""
        x = x_uint8.float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return self._norm(x)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


__all__ = ["N_PARAMS", "PARAM_NAMES", "SimCLRAugment"]

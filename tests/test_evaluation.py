"""Downstream evaluation: kNN, nearest class centre, linear probe, feature extraction."""

import math

import pytest
import torch
from torch import nn

from clnscl.evaluation import extract_features, knn_accuracy, linear_probe_accuracy, ncc_accuracy
from clnscl.models import build_encoder


def _clusters(n_train=300, n_test=200, n_classes=4, d=16, spread=8.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(n_classes, d, generator=g)
    ytr = torch.randint(0, n_classes, (n_train,), generator=g)
    yte = torch.randint(0, n_classes, (n_test,), generator=g)
    xtr = centres[ytr] + torch.randn(n_train, d, generator=g)
    xte = centres[yte] + torch.randn(n_test, d, generator=g)
    return xtr, ytr, xte, yte


def _probe(*args, **kw):
    kw.setdefault("epochs", 30)
    return linear_probe_accuracy(*args, **kw)


ACCURACIES = [knn_accuracy, ncc_accuracy, _probe]


@pytest.mark.parametrize("fn", ACCURACIES)
def test_separable_clusters_are_solved(fn):
    assert fn(*_clusters()) >= 0.99


@pytest.mark.parametrize("fn", ACCURACIES)
def test_random_labels_give_chance(fn):
    xtr, _, xte, _ = _clusters(n_train=600, n_test=600, seed=1)
    g = torch.Generator().manual_seed(2)
    ytr, yte = torch.randint(0, 4, (600,), generator=g), torch.randint(0, 4, (600,), generator=g)
    acc = fn(xtr, ytr, xte, yte)
    assert 0.0 <= acc <= 1.0 and abs(acc - 0.25) < 0.08


def test_knn_matches_loop_reference_and_is_chunk_invariant():
    xtr, ytr, xte, yte = _clusters(n_train=60, n_test=25, spread=0.7, seed=3)
    k, temp = 5, 0.1
    correct = 0
    for x, y in zip(xte, yte):
        sims = torch.nn.functional.cosine_similarity(xtr, x[None], dim=1)
        top = sims.topk(k)
        votes = [0.0] * 4
        for s, i in zip(top.values, top.indices):
            votes[int(ytr[i])] += math.exp(float(s) / temp)
        correct += int(max(range(4), key=votes.__getitem__) == int(y))
    ref = correct / len(yte)
    assert knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=temp) == pytest.approx(ref)
    assert knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=temp, chunk_size=4) == \
        pytest.approx(ref)
    assert 0.3 < ref < 1.0  # the case is not trivial
    # k larger than the train set is clamped
    assert 0.0 <= knn_accuracy(xtr[:3], ytr[:3], xte, yte, k=20) <= 1.0


def test_ncc_ignores_classes_missing_from_train():
    xtr, ytr, xte, yte = _clusters(seed=4)
    keep = ytr != 3
    acc = ncc_accuracy(xtr[keep], ytr[keep], xte, yte)
    assert acc == pytest.approx(float((yte != 3).float().mean()), abs=0.01)


def test_probe_is_deterministic_with_a_seed():
    xtr, ytr, xte, yte = _clusters(spread=0.4, seed=5)  # overlapping: accuracy not saturated
    a = linear_probe_accuracy(xtr, ytr, xte, yte, epochs=10, batch_size=100, seed=7)
    b = linear_probe_accuracy(xtr, ytr, xte, yte, epochs=10, batch_size=100, seed=7)
    assert a == b and 0.3 < a < 1.0


def test_probe_handles_constant_features():
    xtr, ytr, xte, yte = _clusters(seed=6)
    xtr[:, 0], xte[:, 0] = 1.0, 1.0
    assert _probe(xtr, ytr, xte, yte) >= 0.99


def test_shape_errors():
    with pytest.raises(ValueError, match="same d"):
        knn_accuracy(torch.randn(5, 3), torch.zeros(5), torch.randn(5, 4), torch.zeros(5))
    with pytest.raises(ValueError, match="one label"):
        ncc_accuracy(torch.randn(5, 3), torch.zeros(4), torch.randn(5, 3), torch.zeros(5))


# ---------------------------------------------------------------- extract_features

class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.BatchNorm1d(8),
                                      nn.ReLU(), nn.Dropout(0.5))
        self.projector = nn.Sequential(nn.Linear(8, 5), nn.BatchNorm1d(5))

    def forward(self, x):
        h = self.backbone(x)
        return h, self.projector(h)


def _images(n=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)


def _normalize(x):
    assert x.dtype == torch.uint8
    return (x.float() / 255 - 0.5) / 0.25


def test_extract_features_eval_mode_chunks_and_restores_mode():
    torch.manual_seed(0)
    net = TinyNet()
    net(_normalize(_images(64, seed=1)))  # move BN running stats away from their init
    net.train()
    net.projector[1].eval()  # a submodule the caller froze must stay frozen
    modes = {name: m.training for name, m in net.named_modules()}
    x = _images()
    h, z = extract_features(net, x, _normalize, batch_size=5)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert h.shape == (23, 8) and z.shape == (23, 5)
    assert not h.requires_grad and not z.requires_grad
    net.eval()
    with torch.no_grad():
        h_ref, z_ref = net(_normalize(x))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(z, z_ref)
    # eval mode stays eval mode
    extract_features(net, x, _normalize)
    assert not net.training


def test_extract_features_restores_mode_on_error():
    net = TinyNet().train()

    def bad(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(net, _images(), bad)
    assert all(m.training for m in net.modules())


def test_recalibrate_batchnorm_gives_exact_statistics_and_keeps_weights():
    from clnscl.evaluation import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 4, 1),
                                torch.nn.BatchNorm2d(4))
    model[0].running_mean.fill_(5.0)  # stale statistics, as after a different input
    model.eval()
    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    recalibrate_batchnorm(model, x, lambda t: t.float() / 255, batch_size=4)
    xf = x.float() / 255
    # exact average over the 3 batches (4, 4, 2 rows), not an EMA: each batch's mean,
    # weighted equally per batch by momentum=None's cumulative average
    batches = [xf[:4], xf[4:8], xf[8:]]
    expected = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(model[0].running_mean, expected, atol=1e-6)
    assert not model.training and model[0].momentum == 0.1  # mode and momentum restored
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_features_are_extracted_in_channels_last_layout_with_the_same_values():
    """Inference runs on channels-last images (2-4x faster on the CPU, bench.py row c); the
    features match a plain contiguous forward to float rounding."""
    torch.manual_seed(0)
    model = build_encoder("smallcnn", 16, cnn_width=8).eval()
    x = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    norm = lambda t: t.float() / 255
    layouts = []
    hook = model.backbone.register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    h, z = extract_features(model, x, norm, batch_size=16)
    hook.remove()
    assert layouts == [True, True, True]
    with torch.no_grad():
        h_ref, z_ref = model(norm(x))
    assert torch.allclose(h, h_ref, atol=1e-5) and torch.allclose(z, z_ref, atol=1e-5)

import math

import pytest
import torch

from clnscl.config import ConfigError, TrainConfig
from clnscl.optim import LARS, build_optimizer, learning_rate, param_groups


@pytest.mark.parametrize("changes, field, allowed", [
    (dict(tau=0.0), "tau", "> 0"),
    (dict(tau=-1.0), "tau", "> 0"),
    (dict(n_classes=1), "n_classes", "2 to"),
    (dict(n_classes=11, dataset="cifar10"), "n_classes", "2..10"),
    (dict(n_classes=101), "n_classes", "2..100"),
    (dict(batch_size=8, n_classes=10), "batch_size", ">= n_classes=10"),
    (dict(objectives=("cl", "byol")), "objectives", "cl, nscl, supcon, ce"),
    (dict(objectives=("nscl", "supcon")), "objectives", "cl included"),
    (dict(objectives=("cl",)), "objectives", "at least one"),
    (dict(dataset="mnist"), "dataset", "synthetic, cifar10, cifar100"),
    (dict(arch="vgg"), "arch", "smallcnn, resnet18, resnet50"),
    (dict(lr_rule="cubic"), "lr_rule", "linear, sqrt, constant"),
    (dict(optimizer="adam"), "optimizer", "lars, sgd"),
    (dict(epochs=0), "epochs", ">= 1"),
    (dict(device="tpu"), "device", "cpu, cuda"),
])
def test_bad_values_name_field_and_allowed(changes, field, allowed):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**changes)
    assert f"invalid {field}=" in str(e.value) and allowed in str(e.value)


def test_objectives_string_and_canonical_order():
    cfg = TrainConfig(objectives="ce,cl,nscl")
    assert cfg.objectives == ("cl", "nscl", "ce")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config field.*temperature"):
        TrainConfig.from_dict({"temperature": 0.5})


def test_run_name_is_grid_point():
    assert TrainConfig(tau=0.5, batch_size=256, n_classes=10, seed=0).run_name() == "tau=0.5 B=256 C=10 seed=0"


@pytest.mark.parametrize("rule, expected", [("linear", 0.3 * 4), ("sqrt", 0.3 * 2), ("constant", 0.3)])
def test_lr_rules(rule, expected):
    assert TrainConfig(batch_size=1024, lr=0.3, lr_rule=rule).scaled_lr == pytest.approx(expected)


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, batch_size=256, lr=0.3)
    spe = 5
    lrs = [learning_rate(s, spe, cfg) for s in range(cfg.epochs * spe)]
    peak = cfg.scaled_lr
    assert lrs[0] == pytest.approx(peak / 10)
    assert lrs[9] == pytest.approx(peak)                      # end of warm-up
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))   # rising
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))    # cosine falling
    assert lrs[-1] < 0.01 * peak


def test_lars_excludes_bn_and_bias_from_decay_and_trust_ratio():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = param_groups(model, weight_decay=0.1, lars=True)
    assert [p.ndim for p in groups[0]["params"]] == [2]
    assert all(p.ndim == 1 for p in groups[1]["params"]) and len(groups[1]["params"]) == 3
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars"] is False
    opt = build_optimizer(model, TrainConfig(optimizer="lars", weight_decay=0.1))
    assert isinstance(opt, LARS)
    # with lars off for 1-d params the update is plain lr * grad; weights get eta*||w||/||g|| scaling
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    lr = opt.param_groups[0]["lr"]
    opt.step()
    bias_step = w0["0.bias"] - model[0].bias.detach()
    assert torch.allclose(bias_step, torch.full_like(bias_step, lr))
    g = torch.ones_like(w0["0.weight"]) + 0.1 * w0["0.weight"]
    trust = 1e-3 * w0["0.weight"].norm() / g.norm()
    assert torch.allclose(w0["0.weight"] - model[0].weight.detach(), lr * trust * g, atol=1e-7)
    assert math.isfinite(float(trust))

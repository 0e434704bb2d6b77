import pytest
import torch

from clnscl.models import build_encoder


@pytest.mark.parametrize("arch, width", [("smallcnn", 128), ("resnet18", 512), ("resnet50", 2048)])
def test_encoders_cifar_stem_and_projector(arch, width):
    torch.manual_seed(0)
    m = build_encoder(arch, proj_dim=64, n_classes=10).eval()
    h, z = m(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, width) and z.shape == (2, 64)
    assert m.classifier.in_features == 64 and m.classifier.out_features == 10
    # projector of SCIENCE.md: Linear(w, w)-BN-ReLU-Linear(w, d)-BN
    kinds = [type(layer).__name__ for layer in m.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert m.projector[0].in_features == width == m.projector[0].out_features
    if arch != "smallcnn":  # CIFAR stem: 3x3 stride-1 conv, no max-pool
        assert m.backbone.conv1.kernel_size == (3, 3) and m.backbone.conv1.stride == (1, 1)
        assert isinstance(m.backbone.maxpool, torch.nn.Identity)
    names = [n for n, _ in m.encoder_parameters()]
    assert names and not any(n.startswith("classifier") for n in names)

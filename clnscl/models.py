"""Encoders: a backbone giving features h, and the SCIENCE.md projector giving z.

`smallcnn` trains in seconds on a CPU (the default); `resnet18`/`resnet50` come from
torchvision with the CIFAR stem (3x3 conv, stride 1, no max-pool) for small images.
The projector is Linear(w, w)-BN-ReLU-Linear(w, d)-BN with w the backbone width.
The CE objective adds a linear classifier on the projector output (`Encoder.classifier`).
"""

from __future__ import annotations

import torch
from torch import nn


def small_cnn(width: int = 32) -> tuple[nn.Module, int]:
    """Four conv-BN-ReLU stages, pooling after the first three, global average pool.

    About 13M multiply-adds per 32x32 image (ResNet-18 with the CIFAR stem: ~560M), so a
    coupled group of several models trains in seconds per epoch on a CPU.
    """
    def block(cin, cout, pool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return layers

    w = width
    net = nn.Sequential(
        *block(3, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
        *block(4 * w, 4 * w, False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return net, 4 * w


def cifar_resnet(arch: str) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


def projector(width: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out),
    )


class Encoder(nn.Module):
    """backbone -> h, projector(h) -> z; forward returns (h, z)."""

    def __init__(self, backbone: nn.Module, width: int, proj_hidden: int, proj_dim: int,
                 n_classes: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.projector = projector(width, proj_hidden, proj_dim)
        self.classifier = nn.Linear(proj_dim, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.projector(h)

    def encoder_parameters(self):
        """Named parameters of backbone and projector (what parameter distance compares)."""
        for prefix, module in (("backbone", self.backbone), ("projector", self.projector)):
            for name, p in module.named_parameters():
                yield f"{prefix}.{name}", p


def build_encoder(arch: str, proj_dim: int, proj_hidden: int | None = None,
                  n_classes: int | None = None, cnn_width: int = 32) -> Encoder:
    if arch == "smallcnn":
        backbone, width = small_cnn(cnn_width)
    elif arch in ("resnet18", "resnet50"):
        backbone, width = cifar_resnet(arch)
    else:
        raise ValueError(f"invalid arch={arch!r}: allowed smallcnn, resnet18, resnet50")
    return Encoder(backbone, width, proj_hidden or width, proj_dim, n_classes)

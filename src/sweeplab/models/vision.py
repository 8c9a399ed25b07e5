"""Image classifiers: `mlp`, `vgg8` (the VGG-11 layout), `resnet18`, `resnet34`.

Sizes that depend on the data (channels, image size, classes) come from an `ImageSpec` the task
builds from the dataset. The ResNets are torchvision's, module for module (same names, so their
state_dicts are interchangeable, and the same parameter counts: resnet18 with 1000 classes has
11,689,512); below 64x64 pixels they use the 3x3 stem of the CIFAR ResNets (He et al., 2016, §4.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from sweeplab.config import MAX_LAYERS, SIZE, ModelConfig
from sweeplab.errors import UserError
from sweeplab.models.spec import create_model
from sweeplab.registry import MODELS

IMAGENET_STEM_MIN_SIZE = 64  # Tiny-ImageNet and larger: 7x7/2 conv + max-pool; smaller: one 3x3/1 conv


@dataclass(frozen=True)
class ImageSpec:
    channels: int
    height: int
    width: int
    num_classes: int


class VisionConfig(ModelConfig):
    num_classes: int = Field(0, ge=0, description="output classes; 0 = the dataset's (any other value must match it)")


class MLPConfig(VisionConfig):
    hidden: int = Field(512, ge=1, description="units per hidden layer", json_schema_extra=SIZE)
    layers: int = Field(2, ge=1, le=MAX_LAYERS, description="hidden layers", json_schema_extra=SIZE)
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")


class VGGConfig(VisionConfig):
    """vgg8 has no settings beyond num_classes."""


class ResNetConfig(VisionConfig):
    stem: Literal["auto", "imagenet", "cifar"] = Field(
        "auto", description="imagenet (7x7/2 conv + max-pool), cifar (3x3/1 conv), auto: imagenet from 64x64 up")


def create_image_model(name: str, spec: ImageSpec, cfg: VisionConfig) -> nn.Module:
    """The model `name` for data of shape `spec` (outside a task: benchmarks, tests)."""
    check_classes(spec, cfg)
    return create_model("image", name, spec, cfg)


def check_classes(spec: ImageSpec, cfg: VisionConfig) -> None:
    """model.num_classes, if set, must match the data (a plugin model's config may not have it)."""
    if getattr(cfg, "num_classes", 0) and cfg.num_classes != spec.num_classes:
        raise UserError(f"model.num_classes={cfg.num_classes} does not match the data, which has "
                        f"{spec.num_classes} classes; leave it at 0 to take the dataset's")


# ------------------------------------------------------------------------------------------- MLP
class MLP(nn.Module):
    def __init__(self, spec: ImageSpec, cfg: MLPConfig):
        super().__init__()
        sizes = [spec.channels * spec.height * spec.width, *[cfg.hidden] * cfg.layers]
        hidden = [m for a, b in zip(sizes, sizes[1:], strict=False)
                  for m in (nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))]
        self.net = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(sizes[-1], spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, classes)


# ------------------------------------------------------------------------------------------- VGG
VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]  # Simonyan & Zisserman, 2015, config A


class VGG(nn.Module):
    """Conv3x3 + BatchNorm + ReLU blocks with 2x2 max-pools, then one linear layer (as kuangliu's CIFAR VGG).

    The pools use ceil_mode so 28x28 and 8x8 inputs survive five halvings (down to 1x1); for 32x32
    that changes nothing. A global average pool before the classifier makes it size-agnostic; at
    32x32 the features are 1x1 already, so it is the plain flatten of the original.
    """

    def __init__(self, spec: ImageSpec, layout: list[int | str]):
        super().__init__()
        layers: list[nn.Module] = []
        channels = spec.channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                out = int(item)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(x)).flatten(1)  # (B, 512)
        return self.classifier(h)  # (B, classes)


# ---------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:  # projection shortcut (option B of He et al.)
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, spec: ImageSpec, blocks: list[int], stem: str):
        super().__init__()
        if stem == "auto":
            stem = "imagenet" if min(spec.height, spec.width) >= IMAGENET_STEM_MIN_SIZE else "cifar"
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(spec.channels, 64, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:  # small images: keep the resolution, the four stages still halve it three times
            self.conv1 = nn.Conv2d(spec.channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 64
        self.layer1 = self._stage(64, blocks[0], 1)
        self.layer2 = self._stage(128, blocks[1], 2)
        self.layer3 = self._stage(256, blocks[2], 2)
        self.layer4 = self._stage(512, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, spec.num_classes)
        self._init_weights()

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """torchvision's: He-normal convolutions (fan_out), BatchNorm weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H', W')
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, H'/8, W'/8)
        return self.fc(self.avgpool(x).flatten(1))  # (B, classes)


# -------------------------------------------------------------------------------------- registry
@MODELS.register("mlp", group="image", config=MLPConfig)
def _mlp(spec: ImageSpec, cfg: MLPConfig) -> nn.Module:
    """Multi-layer perceptron on the flattened pixels."""
    return MLP(spec, cfg)


@MODELS.register("vgg8", group="image", config=VGGConfig)
def _vgg8(spec: ImageSpec, cfg: VGGConfig) -> nn.Module:
    """VGG-11 layout with BatchNorm: 8 conv, 5 max-pool, 1 linear (Simonyan & Zisserman, 2015)."""
    return VGG(spec, VGG11)


@MODELS.register("resnet18", group="image", config=ResNetConfig)
def _resnet18(spec: ImageSpec, cfg: ResNetConfig) -> nn.Module:
    """ResNet-18, BasicBlock [2, 2, 2, 2] (He et al., 2016)."""
    return ResNet(spec, [2, 2, 2, 2], cfg.stem)


@MODELS.register("resnet34", group="image", config=ResNetConfig)
def _resnet34(spec: ImageSpec, cfg: ResNetConfig) -> nn.Module:
    """ResNet-34, BasicBlock [3, 4, 6, 3] (He et al., 2016)."""
    return ResNet(spec, [3, 4, 6, 3], cfg.stem)

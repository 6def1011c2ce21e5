"""The convolutional built-in models: ``cnn``, ``resnet18-reduced`` and ``lamaml-conv``.

Each follows the model contract of :mod:`lifelong.models.mlp`: ``body`` maps an image batch to
``[B, feature_dim]`` features, ``head`` (one ``nn.Linear``) maps features to the logits of
every head, and ``forward(x, task_ids)`` returns the logits of each sample's own head. Each
takes its input flat (``[B, C*H*W]``, as the MNIST family stores it) or shaped
(``[B, C, H, W]``) and reshapes it itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.models.mlp import head_logits

__all__ = ["CNN", "LaMAMLConv", "ResNet18Reduced", "image_shape"]


def image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``; a ValueError naming ``model`` when it is not one."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            f"{model} takes images [C, H, W]; this stream's inputs are shaped "
            f"{list(input_shape)} (use model=mlp for flat inputs)"
        )
    channels, height, width = input_shape
    return channels, height, width


class ToImage(nn.Module):
    """Rows ``[B, C*H*W]`` (or images ``[B, C, H, W]``) as images ``[B, C, H, W]``: a conv
    body's first step, so that ``body`` takes the inputs the model takes (the contract)."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.input_shape = input_shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), *self.input_shape)


class _Classifier(nn.Module):
    """``head(body(x))``, per head; the shared forward of the convolutional models."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        body: nn.Module,
        feature_dim: int,
        n_outputs: int,
        n_heads: int,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.body = body
        self.head = nn.Linear(feature_dim, n_outputs * n_heads)
        self.feature_dim, self.n_outputs, self.n_heads = feature_dim, n_outputs, n_heads

    def forward(self, x: Tensor, task_ids: Tensor | None = None) -> Tensor:
        """Logits of each sample's head.

        Args:
            x: float ``[B, C*H*W]`` or ``[B, C, H, W]``.
            task_ids: int64 ``[B]``; required when the model has several heads.

        Returns:
            float ``[B, n_outputs]``.
        """
        return head_logits(self.head(self.body(x)), task_ids, self.n_heads, self.n_outputs)


class CNN(_Classifier):
    """A small two-conv-layer net for 28x28 digits: (conv 3x3, ReLU, max-pool 2) twice, then
    a hidden fully connected layer; the features are that layer's ReLU output.

    PyTorch's default initialisation. Any image size works (each pool halves it, rounding
    down).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_outputs: int,
        n_heads: int = 1,
        *,
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 128,
    ) -> None:
        """Args:
        channels: output channels of the two conv layers
        hidden: width of the fully connected layer before the head (the features)
        """
        c, h, w = image_shape(input_shape, "cnn")
        if len(channels) != 2 or min(channels) < 1 or hidden < 1:
            raise ValueError(
                f"cnn needs two positive channel counts and hidden >= 1 "
                f"(got channels={','.join(map(str, channels))}, hidden={hidden})"
            )
        spatial = (h // 2 // 2) * (w // 2 // 2)
        if spatial < 1:
            raise ValueError(f"cnn needs images of at least 4x4 pixels; these are {h}x{w}")
        body = nn.Sequential(
            ToImage((c, h, w)),
            nn.Conv2d(c, channels[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(channels[1] * spatial, hidden),
            nn.ReLU(),
        )
        super().__init__((c, h, w), body, hidden, n_outputs, n_heads)


class _BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with batch norm, plus the (projected) input."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNetBody(nn.Module):
    """The reduced ResNet-18 up to its features: a 3x3 stem, four stages of two basic
    blocks (``nf``, 2, 4, 8 times ``nf`` filters; strides 1, 2, 2, 2), global average pool."""

    def __init__(self, shape: tuple[int, int, int], nf: int) -> None:
        super().__init__()
        self.to_image = ToImage(shape)
        self.conv1 = nn.Conv2d(shape[0], nf, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        stages, planes = [], nf
        for stage, stride in enumerate((1, 2, 2, 2)):
            width = nf * 2**stage
            blocks = (_BasicBlock(planes, width, stride), _BasicBlock(width, width, 1))
            stages.append(nn.Sequential(*blocks))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(self.to_image(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class ResNet18Reduced(_Classifier):
    """The reduced ResNet-18 of GEM (Lopez-Paz & Ranzato 2017), as A-GEM, ER, DER and
    Mammoth use it: 20 base filters, features ``8 * nf`` (160) wide.

    Batch norm everywhere in the body, PyTorch's default initialisation. The features are
    the global average pool of the last stage (Mammoth's form; GEM's ``avg_pool2d(out, 4)``
    is the same on 32x32 inputs and lets 64x64 inputs through at any size).

    References: Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual
    Learning" (official code facebookresearch/GradientEpisodicMemory, ``model/common.py``);
    He et al. 2016; Buzzega et al. 2020 (DER, Mammoth's ``backbone/ResNet18.py``).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_outputs: int,
        n_heads: int = 1,
        *,
        nf: int = 20,
    ) -> None:
        """Args:
        nf: filters of the first stage (later stages: 2, 4 and 8 times as many)
        """
        c, h, w = image_shape(input_shape, "resnet18-reduced")
        if nf < 1:
            raise ValueError(f"resnet18-reduced needs nf >= 1 (got nf={nf})")
        super().__init__((c, h, w), _ResNetBody((c, h, w), nf), 8 * nf, n_outputs, n_heads)


class LaMAMLConv(_Classifier):
    """The conv net of La-MAML's CIFAR-100 and TinyImageNet experiments (its ``pc_cnn``).

    3x3 convs of ``channels`` filters, stride 2, padding 1, each followed by ReLU, as many
    as bring the image down to 4x4 (three for 32x32, four for 64x64), then two ReLU fully
    connected layers of ``hidden`` units (320 after three convs, 640 after four, as La-MAML
    has them) and the head. No batch norm. Weights are Kaiming-normal (fan-in, gain
    sqrt 2), biases zero, as La-MAML's ``Learner`` draws them without ``--xav_init``.

    La-MAML's representation marker (``rep``) sits after the flattened convs; here the two
    hidden layers belong to the body, so that ``head`` is the classifier alone.

    References: Gupta et al. 2020, "La-MAML: Look-ahead Meta Learning for Continual
    Learning" (official code montrealrobotics/La-MAML, ``model/meta/modelfactory.py`` and
    ``model/meta/learner.py``).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_outputs: int,
        n_heads: int = 1,
        *,
        channels: int = 160,
        hidden: int | None = None,
    ) -> None:
        """Args:
        channels: filters of every conv layer
        hidden: width of the two fully connected layers (none: 320 for three convs, 640 for four)
        """
        shape = image_shape(input_shape, "lamaml-conv")
        if channels < 1 or (hidden is not None and hidden < 1):
            raise ValueError(
                f"lamaml-conv needs channels >= 1 and hidden >= 1 (got {channels}, {hidden})"
            )
        layers: list[nn.Module] = []
        c, h, w = shape
        while max(h, w) > 4 or not layers:  # a 3x3 stride-2 conv with padding 1 halves, up
            layers += [nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.ReLU()]
            c, h, w = channels, (h + 1) // 2, (w + 1) // 2
        width = hidden if hidden is not None else (320 if len(layers) <= 6 else 640)
        body = nn.Sequential(
            ToImage(shape),
            *layers,
            nn.Flatten(),
            nn.Linear(channels * h * w, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
        )
        super().__init__(shape, body, width, n_outputs, n_heads)
        _kaiming(self)


@torch.no_grad()
def _kaiming(model: nn.Module) -> None:
    """Kaiming-normal weights (fan-in, ReLU gain) and zero biases, as La-MAML's Learner."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                module.bias.zero_()

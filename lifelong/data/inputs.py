"""How a stream's uint8 inputs become the model's floats: normalisation and augmentation.

A stream without an :class:`InputTransform` (the MNIST family, one's own data) feeds
``x / 255``. An image stream declares one: per-channel normalisation for every batch and,
for training batches only, a random crop after zero padding and a horizontal flip, drawn
on the inputs' device from the run's own generator (DER and Mammoth train Seq-CIFAR-10
with ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["InputTransform", "to_floats"]


@dataclass(frozen=True)
class InputTransform:
    """The float conversion of a stream of images, flattened ``[N, C*H*W]`` uint8.

    Attributes:
        shape: one image's ``(C, H, W)``.
        mean: per-channel mean on the [0, 1] scale, subtracted after dividing by 255.
        std: per-channel standard deviation on the [0, 1] scale, divided by.
        crop_padding: training batches are zero-padded by this many pixels on every
            side and cropped back to ``H x W`` at a random offset (0: no crop).
        flip: training batches are flipped left-right with probability 1/2.
    """

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    _affine: dict[torch.device, tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        channels = self.shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} values, one per channel")
        if min(self.std) <= 0 or self.crop_padding < 0:
            raise ValueError("std must be positive and crop_padding at least 0")

    @property
    def augments(self) -> bool:
        """Whether training batches are drawn at random (crop or flip)."""
        return self.crop_padding > 0 or self.flip

    def normalise_(self, x: Tensor) -> Tensor:
        """``(x / 255 - mean) / std`` per channel, in place on float ``[B, C*H*W]`` (or
        ``[..., C*H*W]``); returns ``x``."""
        scale, shift = self._on(x.device)
        x.unflatten(-1, (self.shape[0], -1)).mul_(scale).add_(shift)  # a view of x
        return x

    def test(self, raw: Tensor) -> Tensor:
        """Float inputs of uint8 ``raw [..., C*H*W]``, normalised, not augmented."""
        return self.normalise_(raw.float())

    def train(self, raw: Tensor, generator: torch.Generator) -> Tensor:
        """Float inputs of uint8 ``raw [B, C*H*W]``: cropped and flipped at random (drawn
        from ``generator``, on ``raw``'s device), then normalised."""
        if self.augments and len(raw):
            raw = self._augmented(raw, generator)
        return self.normalise_(raw.float())

    def _augmented(self, raw: Tensor, generator: torch.Generator) -> Tensor:
        """One gather does crop and flip: output pixel (i, j) of sample b reads the padded
        image at (dy_b + i, dx_b + j), or (dy_b + i, dx_b + W-1-j) when b is flipped."""
        (channels, height, width), pad = self.shape, self.crop_padding
        batch, device = len(raw), raw.device
        offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator, device=device)
        flips = torch.rand(batch, generator=generator, device=device) < 0.5
        if not self.flip:
            flips = torch.zeros_like(flips)
        padded = F.pad(raw.view(batch, channels, height, width), (pad, pad, pad, pad))
        cols = torch.arange(width, device=device)
        cols = torch.where(flips[:, None], width - 1 - cols, cols) + offsets[1][:, None]
        rows = torch.arange(height, device=device) + offsets[0][:, None]
        index = (rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]).view(batch, 1, -1)
        picked = padded.flatten(2).gather(2, index.expand(batch, channels, height * width))
        return picked.view(batch, -1)

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``1 / (255 std)`` and ``-mean / std`` as ``[C, 1]`` tensors on ``device``, made
        once per device (no host-to-device copy per batch)."""
        if device not in self._affine:
            std = torch.tensor(self.std, dtype=torch.float64)
            mean = torch.tensor(self.mean, dtype=torch.float64)
            scale, shift = (1 / (255 * std)), -mean / std
            self._affine[device] = (
                scale.float().view(-1, 1).to(device),
                shift.float().view(-1, 1).to(device),
            )
        return self._affine[device]

    @property
    def input_dim(self) -> int:
        return math.prod(self.shape)


def to_floats(
    raw: Tensor,
    inputs: InputTransform | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The model's float inputs of uint8 ``raw``: ``raw / 255`` without a transform, else
    the transform's training batch (with ``generator``) or test batch (without)."""
    if inputs is None:
        return raw.float().div_(255)
    if generator is None:
        return inputs.test(raw)
    return inputs.train(raw, generator)

"""An exactly C4-equivariant convolutional autoencoder (p4 group convolutions).

Feature maps carry a rotation axis: a tensor of shape ``(B, C * 4, H, W)`` stores channel ``c``
at rotation ``r`` in channel index ``c * 4 + r``. Rotating the input by ``p`` quarter turns
(``torch.rot90``, counter-clockwise) rotates every feature map spatially by ``p`` and rolls the
rotation axis by ``p`` (see :func:`rotate_features`). Exactness needs stride-1 convolutions with
odd kernels and symmetric zero padding, 2x2 average pooling and nearest upsampling on even sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equisae.models.base import Autoencoder, _upsample

ORDER = 4


def rotate_features(features: Tensor, p: int) -> Tensor:
    """Apply rotation ``p`` to p4 feature maps ``(B, C * 4, H, W)``: rot90 plus a cyclic shift."""
    if features.ndim != 4 or features.shape[1] % ORDER != 0:
        raise ValueError(f"features must have shape (B, C*4, H, W), got {tuple(features.shape)}")
    b, c4, h, w = features.shape
    f = features.reshape(b, c4 // ORDER, ORDER, h, w)
    f = torch.roll(f, shifts=p % ORDER, dims=2)
    f = torch.rot90(f, p % ORDER, dims=(-2, -1))
    return f.reshape(b, c4, h, w)


def _he_uniform(weight: Tensor, fan_in: int) -> None:
    """He (ReLU-gain) uniform initialisation: keeps the signal from fading through the deep
    pooled stack (PyTorch's default conv init left training stuck at the mean image)."""
    bound = math.sqrt(6.0 / fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")


class LiftingConv(nn.Module):
    """Lift an image ``(B, C_in, H, W)`` to p4 features ``(B, C_out * 4, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        _he_uniform(self.weight, fan_in=in_channels * kernel_size * kernel_size)

    def expanded_weight(self) -> Tensor:
        """The ordinary conv weight ``(C_out * 4, C_in, k, k)``: filter ``c`` rotated by ``r``."""
        w = torch.stack([torch.rot90(self.weight, r, dims=(-2, -1)) for r in range(ORDER)], dim=1)
        return w.reshape(self.out_channels * ORDER, self.in_channels, self.kernel_size, -1)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.repeat_interleave(ORDER)
        return F.conv2d(x, self.expanded_weight(), bias, padding=self.kernel_size // 2)


class GroupConv(nn.Module):
    """p4 group convolution ``(B, C_in * 4, H, W) -> (B, C_out * 4, H, W)`` with tied filters."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, ORDER, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        _he_uniform(self.weight, fan_in=in_channels * ORDER * kernel_size * kernel_size)

    def expanded_weight(self) -> Tensor:
        """Ordinary conv weight ``(C_out*4, C_in*4, k, k)``: output rotation ``s`` uses the
        filter bank rolled by ``s`` along its rotation axis and rotated by ``s`` in space."""
        banks = [
            torch.rot90(torch.roll(self.weight, shifts=s, dims=2), s, dims=(-2, -1))
            for s in range(ORDER)
        ]
        w = torch.stack(banks, dim=1)  # (C_out, 4, C_in, 4, k, k)
        k = self.kernel_size
        return w.reshape(self.out_channels * ORDER, self.in_channels * ORDER, k, k)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels * ORDER:
            raise ValueError(
                f"GroupConv expects (B, {self.in_channels * ORDER}, H, W), got {tuple(x.shape)}"
            )
        bias = self.bias.repeat_interleave(ORDER)
        return F.conv2d(x, self.expanded_weight(), bias, padding=self.kernel_size // 2)


class RotationMean(nn.Module):
    """Average p4 features over the rotation axis: ``(B, C*4, H, W) -> (B, C, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        b, c4, h, w = x.shape
        return x.reshape(b, c4 // ORDER, ORDER, h, w).mean(dim=2)


def _gblock(c_in: int, c_out: int, k: int, pool: bool, lift: bool = False) -> nn.Sequential:
    conv = LiftingConv(c_in, c_out, k) if lift else GroupConv(c_in, c_out, k)
    layers: list[nn.Module] = [conv, nn.ReLU()]
    if pool:
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers)


class GCNNAutoencoder(Autoencoder):
    """C4-equivariant autoencoder on square images (side a multiple of 16; 32 by default).

    Encoder: lifting conv and group convs, each followed by 2x2 average pooling, down to a
    ``bottleneck_channels x 4 rotations x 2 x 2`` code (64 numbers by default) whose rotation
    is a fixed permutation. Decoder: nearest upsampling and group convs, then the mean over the
    rotation axis gives an equivariant image. Named layers: ``encoder`` (the 4x4 p4 feature
    map, ``channels[2] * 4 * 16`` numbers) and ``bottleneck``.
    """

    CONFIG_KEYS = (
        "in_channels",
        "image_size",
        "channels",
        "bottleneck_channels",
        "kernel_size",
    )

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        channels: tuple[int, int, int] = (4, 8, 8),
        bottleneck_channels: int = 4,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if image_size % 16 != 0:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        if len(channels) != 3:
            raise ValueError(f"channels must have 3 entries, got {channels}")
        self.in_channels, self.image_size = in_channels, image_size
        self.channels, self.bottleneck_channels = tuple(channels), bottleneck_channels
        self.kernel_size = kernel_size
        c1, c2, c3 = channels
        k = kernel_size
        self.encoder = nn.Sequential(
            _gblock(in_channels, c1, k, pool=True, lift=True),
            _gblock(c1, c2, k, pool=True),
            _gblock(c2, c3, k, pool=True),
        )
        self.bottleneck = nn.Sequential(GroupConv(c3, bottleneck_channels, k), nn.AvgPool2d(2))
        self.decoder = nn.Sequential(
            _upsample(),
            _gblock(bottleneck_channels, c3, k, pool=False),
            _upsample(),
            _gblock(c3, c2, k, pool=False),
            _upsample(),
            _gblock(c2, c1, k, pool=False),
            _upsample(),
            GroupConv(c1, in_channels, k),
            RotationMean(),
        )

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> bottleneck p4 features ``(B, bottleneck_channels*4, h, w)``."""
        return self.bottleneck(self.encoder(x))


def feature_permutation(shape: tuple[int, int, int], p: int) -> Tensor:
    """Index vector ``perm`` with ``flat(rotate_features(f, p)) == flat(f)[:, perm]`` for p4
    features of per-sample ``shape`` ``(C * 4, H, W)`` flattened in row-major order."""
    if len(shape) != 3:
        raise ValueError(f"shape must be (C*4, H, W), got {shape}")
    n = shape[0] * shape[1] * shape[2]
    index = torch.arange(n, dtype=torch.float64).reshape(1, *shape)
    return rotate_features(index, p).flatten().long()

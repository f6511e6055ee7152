"""A plain convolutional autoencoder (not equivariant by construction)."""

from __future__ import annotations

from torch import Tensor, nn

from equisae.models.base import Autoencoder, _upsample


def _block(c_in: int, c_out: int, k: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU()]
    if pool:
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers)


class CNNAutoencoder(Autoencoder):
    """Conv encoder (three conv + 2x2 average-pool stages to a 4x4 map), a linear bottleneck of
    ``bottleneck_dim`` numbers, and a mirrored decoder with nearest upsampling.

    Named layers: ``encoder`` (the ``channels[2] x 4 x 4`` map, 512 numbers by default) and
    ``bottleneck`` (the linear code).
    """

    CONFIG_KEYS = ("in_channels", "image_size", "channels", "bottleneck_dim", "kernel_size")

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        channels: tuple[int, int, int] = (16, 32, 32),
        bottleneck_dim: int = 64,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if image_size % 8 != 0:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        if len(channels) != 3:
            raise ValueError(f"channels must have 3 entries, got {channels}")
        self.in_channels, self.image_size = in_channels, image_size
        self.channels, self.bottleneck_dim, self.kernel_size = (
            tuple(channels),
            bottleneck_dim,
            kernel_size,
        )
        c1, c2, c3 = channels
        k = kernel_size
        self.grid = image_size // 8
        self.encoder = nn.Sequential(
            _block(in_channels, c1, k, pool=True),
            _block(c1, c2, k, pool=True),
            _block(c2, c3, k, pool=True),
        )
        flat = c3 * self.grid * self.grid
        self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(flat, bottleneck_dim))
        self.expand = nn.Sequential(
            nn.Linear(bottleneck_dim, flat), nn.ReLU(), nn.Unflatten(1, (c3, self.grid, self.grid))
        )
        self.decoder = nn.Sequential(
            _upsample(),
            _block(c3, c2, k, pool=False),
            _upsample(),
            _block(c2, c1, k, pool=False),
            _upsample(),
            nn.Conv2d(c1, in_channels, k, padding=k // 2),
        )

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def decode(self, z: Tensor) -> Tensor:
        """Codes -> images (linear output, trained to match pixels in [0, 1])."""
        return self.decoder(self.expand(z))

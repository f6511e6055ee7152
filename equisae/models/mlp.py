"""A fully connected autoencoder on flattened images."""

from __future__ import annotations

from torch import Tensor, nn


class MLPAutoencoder(nn.Module):
    """MLP ``C*H*W -> hidden[0] -> hidden[1] -> bottleneck_dim`` and back (ReLU in between).

    Named layers: ``encoder`` (the ``hidden[1]``-wide hidden layer) and ``bottleneck``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        hidden: tuple[int, int] = (512, 256),
        bottleneck_dim: int = 64,
    ) -> None:
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"hidden must have 2 entries, got {hidden}")
        self.in_channels, self.image_size = in_channels, image_size
        self.hidden, self.bottleneck_dim = tuple(hidden), bottleneck_dim
        n_in = in_channels * image_size * image_size
        h1, h2 = hidden
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU()
        )
        self.bottleneck = nn.Linear(h2, bottleneck_dim)
        self.decoder = nn.Sequential(
            nn.Linear(bottleneck_dim, h2),
            nn.ReLU(),
            nn.Linear(h2, h1),
            nn.ReLU(),
            nn.Linear(h1, n_in),
            nn.Unflatten(1, (in_channels, image_size, image_size)),
        )

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the model."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "hidden": list(self.hidden),
            "bottleneck_dim": self.bottleneck_dim,
        }

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> codes ``(B, bottleneck_dim)``."""
        return self.bottleneck(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Codes -> images (linear output, trained to match pixels in [0, 1])."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

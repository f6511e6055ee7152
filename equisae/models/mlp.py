"""A fully connected autoencoder on flattened images."""

from __future__ import annotations

from torch import nn

from equisae.models.base import Autoencoder


class MLPAutoencoder(Autoencoder):
    """MLP ``C*H*W -> hidden[0] -> hidden[1] -> bottleneck_dim`` and back (ReLU in between).

    Named layers: ``encoder`` (the ``hidden[1]``-wide hidden layer) and ``bottleneck``.
    """

    CONFIG_KEYS = ("in_channels", "image_size", "hidden", "bottleneck_dim")

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

"""A small patch-based transformer autoencoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equisae.models.base import Autoencoder


class Patchify(nn.Module):
    """Images ``(B, C, H, W)`` -> patch tokens ``(B, (H/P)*(W/P), C*P*P)`` in row-major order."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)


class Unpatchify(nn.Module):
    """Inverse of :class:`Patchify`."""

    def __init__(self, patch_size: int, channels: int, image_size: int) -> None:
        super().__init__()
        self.patch_size, self.channels, self.image_size = patch_size, channels, image_size

    def forward(self, tokens: Tensor) -> Tensor:
        p, c, s = self.patch_size, self.channels, self.image_size
        g = s // p
        x = tokens.reshape(tokens.shape[0], g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(tokens.shape[0], c, s, s)


class PositionalEmbedding(nn.Module):
    """Add a learned embedding per token position."""

    def __init__(self, n_tokens: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight


def _transformer(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=dim,
        nhead=heads,
        dim_feedforward=2 * dim,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)


class ViTAutoencoder(Autoencoder):
    """Patch tokens -> transformer encoder -> linear bottleneck on the flattened tokens; the
    decoder maps the code to per-patch tokens (linear + GELU) and each token to its pixels.
    (A transformer decoder trained far slower on this data: the analysed layers are in the
    encoder, so the decoder is kept light.)

    Named layers: ``encoder`` (all encoder tokens, ``(image_size/patch_size)^2 * dim`` numbers,
    768 by default) and ``bottleneck``.
    """

    CONFIG_KEYS = (
        "in_channels",
        "image_size",
        "patch_size",
        "dim",
        "depth",
        "heads",
        "bottleneck_dim",
    )

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 8,
        dim: int = 48,
        depth: int = 2,
        heads: int = 4,
        bottleneck_dim: int = 64,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(
                f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})"
            )
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.in_channels, self.image_size, self.patch_size = in_channels, image_size, patch_size
        self.dim, self.depth, self.heads, self.bottleneck_dim = dim, depth, heads, bottleneck_dim
        n_tokens = (image_size // patch_size) ** 2
        patch_dim = in_channels * patch_size * patch_size
        self.encoder = nn.Sequential(
            Patchify(patch_size),
            nn.Linear(patch_dim, dim),
            PositionalEmbedding(n_tokens, dim),
            _transformer(dim, depth, heads),
            nn.LayerNorm(dim),
        )
        self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(n_tokens * dim, bottleneck_dim))
        self.decoder = nn.Sequential(
            nn.Linear(bottleneck_dim, n_tokens * dim),
            nn.GELU(),
            nn.Unflatten(1, (n_tokens, dim)),
            nn.Linear(dim, patch_dim),
            Unpatchify(patch_size, in_channels, image_size),
        )

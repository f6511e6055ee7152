"""What every base autoencoder shares: ``encode``/``decode``/``forward`` and ``config``."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


def _upsample() -> nn.Upsample:
    """2x nearest-neighbour upsampling (exactly C4-equivariant on even sizes)."""
    return nn.Upsample(scale_factor=2, mode="nearest")


class Autoencoder(nn.Module):
    """Base class of the base autoencoders.

    A subclass builds the modules ``encoder``, ``bottleneck`` and ``decoder`` (the named layers
    the analysis hooks), stores its constructor arguments as attributes of the same names and
    lists those names in ``CONFIG_KEYS``. Holds no parameters or submodules itself, so
    subclasses' ``state_dict`` keys are their own.
    """

    #: constructor arguments returned by :meth:`config` (tuples are returned as lists)
    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()

    encoder: nn.Module
    bottleneck: nn.Module
    decoder: nn.Module

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the model."""
        out = {}
        for key in self.CONFIG_KEYS:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> codes ``(B, bottleneck_dim)``."""
        return self.bottleneck(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Codes -> images (linear output, trained to match pixels in [0, 1])."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

"""Deprecated alias of :mod:`equisae.activation_cache` (the cached orbit activations).

Import from ``equisae.activation_cache`` instead; this module only re-exports its names.
"""

from __future__ import annotations

import warnings

from equisae.activation_cache import (  # noqa: F401
    CACHE_VERSION,
    GROUP_NAME,
    SPLITS,
    activation_folder,
    activation_key,
    orbit_activations_for,
    output_equivariance_error,
    resolve_layer,
)

warnings.warn(
    "equisae.pipeline is deprecated: import from equisae.activation_cache",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CACHE_VERSION",
    "GROUP_NAME",
    "SPLITS",
    "activation_folder",
    "activation_key",
    "orbit_activations_for",
    "output_equivariance_error",
    "resolve_layer",
]

"""The sparse-autoencoder base class, its outputs, and the architecture registry.

Weights follow the SAELens layout: ``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,),
``W_dec`` (d_sae, d_in) with unit-norm rows, ``b_dec`` (d_in,). A subclass only has to
implement :meth:`SparseAutoencoder.activation` (pre-activations -> latents); orbit SAEs
override :meth:`SparseAutoencoder.loss` to take ``(B, |G|, d)`` batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from equisae.sae.config import (  # noqa: F401  (the checks are imported from here too)
    DTYPES,
    SAEConfig,
    _check_finite_nonnegative,
    _check_positive_int,
)
from equisae.sae.init import geometric_median

__all__ = [
    "ARCHITECTURES",
    "LossOutput",
    "SAEOutput",
    "SparseAutoencoder",
    "get_architecture",
    "normalize_rows_",
    "register_architecture",
    "remove_parallel_",
]


@dataclass
class SAEOutput:
    """What :meth:`SparseAutoencoder.forward` returns; leading dimensions of the input are kept."""

    latents: Tensor  # (..., d_sae)
    recon: Tensor  # (..., d_in)
    pre_acts: Tensor  # (..., d_sae)


@dataclass
class LossOutput:
    """A training loss: ``total`` (scalar, differentiable) and its named ``terms``.

    ``latents`` has shape (..., d_sae) (the trainer counts firing over all leading dimensions);
    ``recon`` and ``target`` have the same shape and give the reconstruction metrics.
    """

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    latents: Tensor | None = None
    recon: Tensor | None = None
    target: Tensor | None = None


ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {}

_S = TypeVar("_S", bound="type[SparseAutoencoder]")


def register_architecture(name: str) -> Callable[[_S], _S]:
    """Class decorator: register an SAE class under ``name`` so :func:`load_sae` can rebuild it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"architecture name must be a non-empty string, got {name!r}")

    def decorator(cls: _S) -> _S:
        if not (isinstance(cls, type) and issubclass(cls, SparseAutoencoder)):
            raise ValueError(f"register_architecture({name!r}) needs a SparseAutoencoder subclass")
        existing = ARCHITECTURES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"architecture {name!r} is already registered to {existing.__name__}")
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return cls

    return decorator


def get_architecture(name: str) -> type[SparseAutoencoder]:
    """The registered SAE class called ``name`` (KeyError listing the known names otherwise)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(
            f"unknown SAE architecture {name!r}; registered: {sorted(ARCHITECTURES)}"
        ) from None


def _check_orbit_batch(batch: Any, group_order: int, d_in: int, name: str = "batch") -> Tensor:
    """Validate an orbit batch ``(B, group_order, d_in)`` and return it."""
    if not isinstance(batch, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
    if batch.ndim != 3 or batch.shape[1:] != (group_order, d_in):
        raise ValueError(
            f"{name} must be an orbit batch of shape (B, group_order={group_order}, "
            f"d_in={d_in}), got {tuple(batch.shape)}"
        )
    return batch


@torch.no_grad()
def normalize_rows_(rows: Tensor) -> None:
    """Rescale each row (last dimension) of ``rows`` to unit norm, in place."""
    rows.div_(rows.norm(dim=-1, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def remove_parallel_(grad: Tensor, rows: Tensor) -> None:
    """Remove from ``grad`` (in place) its component along each row (last dimension) of ``rows``."""
    norms_sq = rows.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
    parallel = (grad * rows).sum(-1, keepdim=True) / norms_sq
    grad.sub_(parallel * rows)


class SparseAutoencoder(nn.Module):
    """Base class: ``z = act((h - b_dec) W_enc + b_enc)``, ``h_hat = z W_dec + b_dec``.

    Every hyperparameter lives in one frozen config dataclass, the class's
    :attr:`config_class` (see :mod:`equisae.sae.config`); ``sae.cfg`` is the instance it was
    built from. Build with the config (``TopKSAE(TopKConfig(16, 64, k=4, seed=1))``) or with its
    fields (``TopKSAE(16, 64, k=4, seed=1)``); an unknown field is a ValueError naming it.
    The decoder is initialised with random unit-norm rows (from ``seed``) and the encoder
    with the decoder's transpose. Inputs may have any leading dimensions: ``(..., d_in)``.
    """

    #: the config dataclass of this class (one per class; its fields are the hyperparameters)
    config_class: ClassVar[type[SAEConfig]] = SAEConfig

    #: traits read by the factory and evaluation (one variant = one class; the plotting
    #: traits, label and colour, live in equisae.plots.style)
    variant: ClassVar[str | None] = None  # the short name sweeps use; None: not a sweep variant
    takes_orbits: ClassVar[bool] = False  # loss takes (B, |G|, d) orbit batches
    is_equivariant: ClassVar[bool] = False  # invariant latents + a group representation
    learns_representation: ClassVar[bool] = False
    #: how a single activation is evaluated without its pose (equisae.sae.evaluate)
    pose_convention: ClassVar[str] = "not needed"
    #: whether evaluation also reports the FVU with the true pose given (``fvu_oracle_pose``)
    reports_oracle_pose: ClassVar[bool] = False

    architecture: ClassVar[str] = "base"
    #: cfg.json fields that are ours (not config fields) and ignored by from_config.
    _NON_INIT_FIELDS: ClassVar[tuple[str, ...]] = (
        "architecture",
        "device",
        "apply_b_dec_to_input",
        "normalize_activations",
        "reshape_activations",
        "metadata",
        "model_name",
        "hook_name",
        "equisae_version",
        "equisae_architecture",
        "rescale_acts_by_decoder_norm",
    )

    def __init__(self, *args: Any, **fields: Any) -> None:
        super().__init__()
        self.cfg = self._make_config(args, fields)
        torch_dtype = DTYPES[self.cfg.dtype]
        gen = torch.Generator().manual_seed(self.seed)
        d_sae, d_in = self.d_sae, self.d_in
        w_dec = torch.randn(d_sae, d_in, generator=gen, dtype=torch.float64)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(torch_dtype))
        self.W_enc = nn.Parameter(w_dec.T.contiguous().to(torch_dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=torch_dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=torch_dtype))

    @classmethod
    def _make_config(cls, args: tuple[Any, ...], fields: dict[str, Any]) -> SAEConfig:
        """The config from ``(config,)`` or from its fields (ValueError naming a bad one)."""
        if len(args) == 1 and isinstance(args[0], SAEConfig):
            if type(args[0]) is not cls.config_class:
                raise ValueError(
                    f"{cls.__name__} needs a {cls.config_class.__name__}, "
                    f"got a {type(args[0]).__name__}"
                )
            if fields:
                raise ValueError(
                    f"give {cls.__name__} either a config or its fields, not both "
                    f"(got the config and {sorted(fields)})"
                )
            return args[0]
        return cls.config_class.create(*args, **fields)

    # ------------------------------------------------------------------ configuration
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def aux_k(self) -> int | None:
        return self.cfg.aux_k

    @property
    def aux_coef(self) -> float:
        return self.cfg.aux_coef

    @property
    def dtype_name(self) -> str:
        return self.cfg.dtype

    def config(self) -> dict[str, Any]:
        """``architecture``, the config's fields and SAELens-style fields (``equisae.sae.io``)."""
        return {
            "architecture": self.architecture,
            **self.cfg.to_dict(),
            "device": str(self.W_dec.device),
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
        }

    @classmethod
    def from_config(cls, cfg: SAEConfig | dict[str, Any], **tensors: Any) -> SparseAutoencoder:
        """An untrained model of this class from its config or :meth:`config`'s dictionary
        (also the cfg.json of older versions); ``tensors`` (e.g. ``M=``) go to the constructor."""
        if isinstance(cfg, SAEConfig):
            return cls(cfg, **tensors)
        if not isinstance(cfg, dict):
            raise ValueError(f"cfg must be a {cls.config_class.__name__} or a dict, got {cfg!r}")
        arch = cfg.get("architecture", cls.architecture)
        if arch != cls.architecture:
            raise ValueError(f"cfg architecture {arch!r} does not match {cls.__name__}")
        data = {k: v for k, v in cfg.items() if k not in cls._NON_INIT_FIELDS}
        return cls(cls.config_class.from_dict(data), **tensors)

    @property
    def n_params(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}"

    # ------------------------------------------------------------------ shapes
    def _flatten(self, h: Tensor, name: str = "h") -> tuple[Tensor, torch.Size]:
        """(..., d_in) -> ((N, d_in), leading shape), with a clear error on a bad last dim."""
        if not isinstance(h, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(h).__name__}")
        if h.ndim == 0 or h.shape[-1] != self.d_in:
            raise ValueError(
                f"{name} must have shape (..., d_in={self.d_in}), got {tuple(h.shape)}"
            )
        return h.reshape(-1, self.d_in), h.shape[:-1]

    def _flatten_latents(self, z: Tensor) -> tuple[Tensor, torch.Size]:
        if not isinstance(z, Tensor):
            raise ValueError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if z.ndim == 0 or z.shape[-1] != self.d_sae:
            raise ValueError(f"z must have shape (..., d_sae={self.d_sae}), got {tuple(z.shape)}")
        return z.reshape(-1, self.d_sae), z.shape[:-1]

    # ------------------------------------------------------------------ the model
    def pre_activations(self, h: Tensor) -> Tensor:
        """``(h - b_dec) W_enc + b_enc`` for (..., d_in) inputs."""
        flat, lead = self._flatten(h)
        pre = torch.addmm(self.b_enc, flat - self.b_dec, self.W_enc)
        return pre.reshape(*lead, self.d_sae)

    def activation(self, pre_acts: Tensor) -> Tensor:
        """Map (N, d_sae) pre-activations to latents. Implemented by every architecture."""
        raise NotImplementedError(f"{type(self).__name__} must implement activation()")

    def encode(self, h: Tensor) -> Tensor:
        """Latents (..., d_sae) of activations (..., d_in)."""
        flat, lead = self._flatten(h)
        pre = torch.addmm(self.b_enc, flat - self.b_dec, self.W_enc)
        return self.activation(pre).reshape(*lead, self.d_sae)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction (..., d_in) of latents (..., d_sae)."""
        flat, lead = self._flatten_latents(z)
        return torch.addmm(self.b_dec, flat, self.W_dec).reshape(*lead, self.d_in)

    def forward(self, h: Tensor) -> SAEOutput:
        """Encode then decode; returns latents, reconstruction and pre-activations."""
        flat, lead = self._flatten(h)
        pre = torch.addmm(self.b_enc, flat - self.b_dec, self.W_enc)
        z = self.activation(pre)
        recon = torch.addmm(self.b_dec, z, self.W_dec)
        return SAEOutput(
            latents=z.reshape(*lead, self.d_sae),
            recon=recon.reshape(*lead, self.d_in),
            pre_acts=pre.reshape(*lead, self.d_sae),
        )

    # ------------------------------------------------------------------ training

    @torch.no_grad()
    def orbit_outputs(self, acts: Tensor, pose: str = "inferred") -> tuple[Tensor, Tensor, Tensor]:
        """Latents (N, G, d_sae), reconstructions (N, G, d_in) and the poses used (N, G) of
        orbit activations (N, G, d_in). A regular SAE needs no pose: every activation is encoded
        and decoded on its own, and the poses returned are the orbit positions."""
        n, order, d = acts.shape
        out = self(acts.reshape(n * order, d))
        poses = torch.arange(order, device=acts.device).expand(n, order).clone()
        return out.latents.reshape(n, order, -1), out.recon.reshape(n, order, d), poses

    def decoder_atoms(self) -> Tensor:
        """The decoder directions as (n_atoms, d_in): the rows of ``W_dec``."""
        return self.W_dec.detach().clone()

    def loss(self, batch: Tensor, dead_mask: Tensor | None = None) -> LossOutput:
        """Training loss on a batch (..., d_in): ``mse`` plus ``sparsity_loss`` plus AuxK.

        ``mse`` is the mean squared error per element. With a ``dead_mask`` (d_sae,) bool,
        the AuxK term of Gao et al. (2024) is added: the top ``aux_k`` dead latents
        reconstruct the residual, scored by normalised MSE and weighted by ``aux_coef``.
        """
        out = self.forward(batch)
        flat_target, _ = self._flatten(batch, "batch")
        flat_recon = out.recon.reshape(-1, self.d_in)
        flat_z = out.latents.reshape(-1, self.d_sae)
        mse = (flat_recon - flat_target).pow(2).mean()
        terms: dict[str, Tensor] = {"mse": mse}
        total = mse
        for name, value in self.sparsity_loss(flat_z).items():
            terms[name] = value
            total = total + value
        aux = self.auxk_loss(
            out.pre_acts.reshape(-1, self.d_sae), flat_target - flat_recon.detach(), dead_mask
        )
        total = self._add_auxk(total, terms, aux)
        return LossOutput(
            total=total, terms=terms, latents=out.latents, recon=out.recon, target=batch
        )

    def sparsity_loss(self, latents: Tensor) -> dict[str, Tensor]:
        """Extra penalty terms on (N, d_sae) latents (none by default; ReLU adds L1)."""
        return {}

    def auxk_loss(
        self,
        pre_acts: Tensor,
        residual: Tensor,
        dead_mask: Tensor | None,
    ) -> Tensor | None:
        """AuxK loss of the dense loss: reconstruct ``residual`` (N, d) from the top-k_aux
        dead pre-activations (the TopK family's is :func:`equisae.sae.stack.stacked_auxk`).

        ``k_aux`` is ``aux_k`` or ``d_in // 2``, capped by the number of dead latents.
        Returns ``None`` when there is no dead latent.
        """
        n_dead = self._count_dead(dead_mask)
        if n_dead == 0:
            return None
        k_aux = self.aux_k_for(n_dead)
        masked = pre_acts.masked_fill(~dead_mask, float("-inf"))
        vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
        codes = torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())
        return self.normalized_aux_error(codes @ self.W_dec, residual)

    def _check_dead_mask(self, dead_mask: Tensor) -> None:
        if dead_mask.shape != (self.d_sae,) or dead_mask.dtype != torch.bool:
            raise ValueError(
                f"dead_mask must be a bool tensor of shape ({self.d_sae},), "
                f"got {dead_mask.dtype} {tuple(dead_mask.shape)}"
            )

    def _count_dead(self, dead_mask: Tensor | None) -> int:
        """Number of dead latents in a validated ``dead_mask`` (0 when there is no mask)."""
        if dead_mask is None:
            return 0
        self._check_dead_mask(dead_mask)
        return int(dead_mask.sum())

    def _add_auxk(self, total: Tensor, terms: dict[str, Tensor], aux: Tensor | None) -> Tensor:
        """Record an AuxK term (if any) in ``terms`` and return ``total + aux_coef * aux``."""
        if aux is None:
            return total
        terms["auxk"] = aux
        return total + self.aux_coef * aux

    def aux_k_for(self, n_dead: int) -> int:
        """How many dead latents AuxK uses: ``aux_k`` (default d_in // 2), capped by ``n_dead``."""
        return min(self.aux_k if self.aux_k is not None else max(1, self.d_in // 2), n_dead)

    @staticmethod
    def normalized_aux_error(aux_recon: Tensor, residual: Tensor) -> Tensor:
        """Mean over rows of ``||aux_recon - e||^2 / ||e||^2`` with the residual ``e`` detached."""
        residual = residual.detach()
        denom = residual.pow(2).sum(-1).clamp_min(1e-12)
        nmse = (aux_recon - residual).pow(2).sum(-1) / denom
        return torch.nan_to_num(nmse.mean(), nan=0.0)

    def init_from_sample(self, sample: Tensor, method: str = "geometric_median") -> None:
        """Set ``b_dec`` from a sample (..., d_in): its geometric median, mean, or leave it."""

        flat, _ = self._flatten(sample, "sample")
        if method == "none":
            return
        if method == "mean":
            centre = flat.double().mean(0)
        elif method == "geometric_median":
            centre = geometric_median(flat)
        else:
            raise ValueError(
                f"b_dec init method must be 'geometric_median', 'mean' or 'none', got {method!r}"
            )
        with torch.no_grad():
            self.b_dec.copy_(centre.to(self.b_dec.dtype))

    def decoder_rows(self, W_dec: Tensor) -> Tensor:
        """``W_dec`` (..., d_sae, D) as the rows kept at unit norm (a view; leading dimensions,
        such as the SAE dimension of a stack, are kept). The rows of ``W_dec`` here."""
        return W_dec

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row (:meth:`decoder_rows`) to unit norm (in place)."""
        normalize_rows_(self.decoder_rows(self.W_dec))

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Remove from ``W_dec.grad`` the component parallel to each (unit) decoder row."""
        if self.W_dec.grad is not None:
            remove_parallel_(self.decoder_rows(self.W_dec.grad), self.decoder_rows(self.W_dec))

    @torch.no_grad()
    def fold_activation_scale(self, scale: float) -> None:
        """Fold an input scaling into the weights.

        After training on ``scale * h``, make the model act on ``h`` directly. Valid for
        positively homogeneous activations (TopK, ReLU, thresholds scaled with them): biases
        and thresholds are divided by ``scale``; the unit-norm decoder rows are unchanged.
        """
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite positive number, got {scale!r}")
        self.b_enc.div_(scale)
        self.b_dec.div_(scale)

"""Equivariant TopK SAE with a fixed group representation ``rho`` (the Method page, section 2).

Every pose is encoded from its own raw activation by the one shared TopK encoder and
reconstructed through the representation of its group element::

    z_p     = TopK(W_enc^T (h_p - b_dec) + b_enc)
    h_hat_p = rho(g_p) W_dec^T z_p + b_dec

Invariance of the latents is *learned* through the ``lambda_inv`` term of the orbit loss, not
imposed (the canonicalising encoder, which reads ``rho(g_p)^-1 (h_p - b_dec)``, is the named
variant of :mod:`equisae.sae.canonical`: there ``z`` is a code of ``h_0`` and keeps its pose
content). The orbit loss on ``(B, |G|, d_in)`` batches, every sum divided by ``B |G| d_in`` so
that the first term is the per-element MSE the trainer reports::

    L = sum_p ||h_p - h_hat_p||^2 + lambda_inv * sum_p ||z_p - mean_q z_q||^2   (+ AuxK)

At evaluation the pose is unknown and inferred, ``p_hat = argmin_p ||h - (rho(g_p) W_dec z +
b_dec)||``; since ``z`` does not depend on ``p`` this is one encode and one GEMM against the
stacked ``(d, |G| d)`` matrix of all ``rho(g)^T``.

The group is a :class:`~equisae.groups.Group` or its name (``"C4"``, ``"D4"``; default C4, or
``C_{group_order}``). The representation is given by its generator matrices (``M`` the rotation
``r`` for C_n, ``generators={"r": R, "s": S}`` for D_n); ``rho(g)`` for every element comes from
:func:`equisae.groups.representation_matrices`. Here the generators are frozen buffers (e.g. the
least-squares fit of ``equisae.linrep``); they must be finite and well conditioned. The stack
``rho(g)`` (and its inverse) is cached and recomputed when a generator changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from equisae.groups import (
    CyclicGroup,
    Group,
    generator_names,
    get_group,
    relation_errors,
    representation_matrices,
)
from equisae.sae.base import (
    SAEOutput,
    _check_orbit_batch,
    _check_positive_int,
    register_architecture,
)
from equisae.sae.config import EquivariantConfig, GroupTopKConfig
from equisae.sae.stack import Stack, StackedLoss, stacked_auxk, stacked_decode, topk_codes
from equisae.sae.topk import TopKSAE

__all__ = ["COND_LIMIT", "GENERATOR_ATTRS", "POSE_MODES", "EquivariantSAE", "Pose", "resolve_group"]

#: A pose: one int for every row, or a (N,) long tensor, or None to infer it.
Pose = int | Tensor | None
#: How the pose of orbit activations is chosen at evaluation.
POSE_MODES = ("inferred", "oracle")
#: generator name (``groups.generator_names``) -> attribute of the model holding its matrix
GENERATOR_ATTRS: dict[str, str] = {"r": "M", "s": "S"}
#: largest condition number accepted for a fixed generator matrix
COND_LIMIT = 1e6
#: a fixed generator's scale |det|^(1/d) (1 for a representation) must lie in [1/L, L]
SCALE_LIMIT = 1e3


def resolve_group(group: Group | str | None, group_order: int | None) -> Group:
    """The model's group: ``group`` (a Group or a name such as ``"D4"``), else ``C_group_order``
    (default C4). Both given must agree on the order."""
    if group is None:
        return CyclicGroup(
            _check_positive_int("group_order", 4 if group_order is None else group_order)
        )
    resolved = get_group(group) if isinstance(group, str) else group
    if not isinstance(resolved, Group):
        raise ValueError(f"group must be a Group or a name like 'C4' or 'D4', got {group!r}")
    if group_order is not None and group_order != resolved.order:
        raise ValueError(
            f"group_order={group_order!r} does not match group {resolved.name} "
            f"of order {resolved.order}; give only group="
        )
    return resolved


def _check_incoming_generators(
    module: EquivariantSAE, state_dict: Mapping, prefix: str, *_
) -> None:
    """``load_state_dict`` pre-hook: refuse generators the constructor would refuse (a zeroed,
    singular, non-finite or misshapen M), before anything is loaded."""
    for name in generator_names(module.group):
        key = prefix + GENERATOR_ATTRS[name]
        if key in state_dict:
            module._checked_generator(name, state_dict[key])


def _is_plain(t: Tensor) -> bool:
    """Whether ``t`` is an ordinary tensor (not wrapped by vmap/grad transforms, not traced)."""
    if type(t) not in (Tensor, torch.nn.Parameter):
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(t)


def _apply_by_pose(u: Tensor, mats: Tensor, idx: Tensor) -> Tensor:
    """``mats[idx[n]] @ u[n]`` for rows (N, d), one GEMM per pose present (no (N, d, d) gather)."""
    out = torch.empty_like(u)
    for p in torch.unique(idx).tolist():
        rows = (idx == p).nonzero().squeeze(1)
        out[rows] = u[rows] @ mats[p].T
    return out


def _apply_per_pose(u: Tensor, mats: Tensor) -> Tensor:
    """``mats[p] @ u[n, p]`` for (N, G, d) -> (N, G, d): one batched matmul over the poses."""
    return torch.einsum("npj,pij->npi", u, mats)


def _apply_per_pose_stacked(u: Tensor, mats: Tensor) -> Tensor:
    """``mats[s, p] @ u[s, b, p]`` for (S, B, G, d) and (S, G, d, d): one batched product."""
    return torch.einsum("sbpj,spij->sbpi", u, mats)


@register_architecture("equivariant_topk")
class EquivariantSAE(TopKSAE):
    """TopK SAE with per-pose raw encoding and reconstruction ``rho(g_p) W_dec z_p + b_dec``.

    The generator matrices (``M`` and, for D_n, ``S``) are buffers: not trained, not counted in
    :attr:`n_params`, saved with the weights. ``loss`` takes orbit batches ``(B, |G|, d_in)``;
    ``encode``, ``decode`` and ``forward`` take single activations ``(..., d_in)`` with an
    optional pose (an element index of the group); :meth:`orbit_outputs` evaluates orbits.
    The hyperparameters are an :class:`~equisae.sae.config.EquivariantConfig` (the group by
    name); the generator matrices are tensors, given beside it. ``group`` may also be a
    :class:`~equisae.groups.Group`, or ``group_order=n`` may name ``C_n``: both are turned into
    the config's group name. The orbit loss is written once, on stacked weights
    (:meth:`stacked_loss`); :meth:`loss` runs it on a stack of one.
    """

    config_class: ClassVar[type[GroupTopKConfig]] = EquivariantConfig
    variant: ClassVar[str | None] = "equivariant"
    pose_convention: ClassVar[str] = "inferred"
    reports_oracle_pose: ClassVar[bool] = True

    takes_orbits: ClassVar[bool] = True
    is_equivariant: ClassVar[bool] = True
    #: how a pose is encoded: "raw" (the Method page) or "canonical" (the named variant)
    encoder: ClassVar[str] = "raw"
    #: whether the generators are learned (nn.Parameter) or frozen buffers
    learns_representation: ClassVar[bool] = False
    #: whether training encodes one latent vector per orbit (the canonicalised orbit mean)
    latent_per_orbit: ClassVar[bool] = False

    def __init__(
        self,
        *args: Any,
        M: Tensor | None = None,
        generators: Mapping[str, Tensor] | None = None,
        group: Group | str | None = None,
        group_order: int | None = None,
        **fields: Any,
    ) -> None:
        if group is not None or group_order is not None:
            if args and isinstance(args[0], GroupTopKConfig):
                raise ValueError("the config names the group: do not also pass group=/group_order=")
            fields["group"] = resolve_group(group, group_order).name
        super().__init__(*args, **fields)
        self.group = get_group(self.cfg.group)
        self._inverse_index = [self.group.inverse(a) for a in self.group.elements()]
        self._rep_cache: dict[str, tuple[tuple, Tensor]] = {}
        for name, mat in self._generator_inputs(M, generators).items():
            checked = self._checked_generator(name, mat).to(self.W_dec.dtype)
            self.register_buffer(GENERATOR_ATTRS[name], checked)
        self.register_load_state_dict_pre_hook(_check_incoming_generators)

    # ------------------------------------------------------------------ representation
    def _generator_inputs(
        self, M: Tensor | None, generators: Mapping[str, Tensor] | None
    ) -> dict[str, Tensor | None]:
        names = generator_names(self.group)
        if generators is None:
            if M is not None and len(names) > 1:
                raise ValueError(
                    f"{self.group.name} is generated by {list(names)}: pass "
                    "generators={'r': R, 's': S} instead of M"
                )
            return {"r": M} | {name: None for name in names[1:]}
        if M is not None:
            raise ValueError("give either M (the rotation generator) or generators, not both")
        if not isinstance(generators, Mapping) or sorted(generators) != sorted(names):
            given = sorted(generators) if isinstance(generators, Mapping) else generators
            raise ValueError(
                f"generators for {self.group.name} must map {list(names)}, got {given}"
            )
        return {name: generators[name] for name in names}

    def _checked_generator(self, name: str, mat: Tensor | None) -> Tensor:
        """A detached copy of a generator matrix (identity if None), validated."""
        label = "M" if name == "r" else f"generators[{name!r}]"
        if mat is None:
            return torch.eye(self.d_in, dtype=torch.float64)
        if not isinstance(mat, Tensor):
            mat = torch.as_tensor(mat)
        if mat.shape != (self.d_in, self.d_in):
            raise ValueError(
                f"{label} must have shape (d_in, d_in) = ({self.d_in}, {self.d_in}), "
                f"got {tuple(mat.shape)}"
            )
        if not torch.isfinite(mat).all():
            raise ValueError(f"{label} contains non-finite values")
        if not self.learns_representation:
            cond = float(torch.linalg.cond(mat.detach().double()))
            if not cond <= COND_LIMIT:
                raise ValueError(
                    f"{label} is singular or ill-conditioned (condition number {cond:.3g} > "
                    f"{COND_LIMIT:.0e}); a fixed representation must be invertible. Fix: pass the "
                    "full-rank M of equisae.linrep.sae_representation(train, val) (not a fit's "
                    "rank-deficient rep.M), or learn it with AdaptiveEquivariantSAE"
                )
            scale = float(
                torch.exp(torch.linalg.slogdet(mat.detach().double()).logabsdet / self.d_in)
            )
            if not 1 / SCALE_LIMIT <= scale <= SCALE_LIMIT:
                raise ValueError(
                    f"{label} has scale |det|^(1/d) = {scale:.3g}, outside [{1 / SCALE_LIMIT:.0e}, "
                    f"{SCALE_LIMIT:.0e}]; a representation of a finite group has scale 1, so its "
                    "powers would overflow or vanish. Fix: use the least-squares fit of "
                    "equisae.linrep, or rescale the matrix"
                )
        return mat.detach().clone()

    def generators(self) -> dict[str, Tensor]:
        """The generator matrices by name (``"r"``; ``"s"`` for D_n), each (d_in, d_in)."""
        return {name: getattr(self, GENERATOR_ATTRS[name]) for name in generator_names(self.group)}

    def rep(self) -> Tensor:
        """The rotation generator ``M`` (d_in, d_in)."""
        return self.M

    def _cached(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, cached while no generator changes (identity, version, storage).

        The cache is skipped when a generator needs a graph (grad enabled and requires_grad)
        or is not a plain tensor (vmap / functional_call wrappers, tracing), so it can never
        return a stale or graph-less result.
        """
        gens = list(self.generators().values())
        if torch.compiler.is_compiling() or not all(_is_plain(g) for g in gens):
            return compute()
        if torch.is_grad_enabled() and any(g.requires_grad for g in gens):
            return compute()
        stamp = tuple((g, g._version, g.data_ptr(), g.dtype, g.device) for g in gens)
        hit = self._rep_cache.get(key)
        if hit is not None and len(hit[0]) == len(stamp):
            if all(a[0] is b[0] and a[1:] == b[1:] for a, b in zip(hit[0], stamp, strict=True)):
                return hit[1]
        with torch.no_grad():
            value = compute()
        self._rep_cache[key] = (stamp, value)
        return value

    def representation(self) -> Tensor:
        """``rho(g)`` for every element ``g`` of the group: (order, d_in, d_in).

        Differentiable in learned generators; cached for fixed ones.
        """
        return self._cached("rho", lambda: representation_matrices(self.group, self.generators()))

    def rep_powers(self) -> Tensor:
        """Alias of :meth:`representation` (``M^p`` for C_n)."""
        return self.representation()

    def representation_inverse(self) -> Tensor:
        """``rho(g)^-1`` for every element (order, d_in, d_in): the matrix inverse (cached)."""
        return self._cached("rho_inv", lambda: torch.linalg.inv(self.representation()))

    def rep_inverse_powers(self) -> Tensor:
        """Alias of :meth:`representation_inverse` (``M^-p`` for C_n)."""
        return self.representation_inverse()

    def _stacked_transposes(self, key: str, mats: Callable[[], Tensor]) -> Tensor:
        """(d, order * d) matrix ``[A_0^T | A_1^T | ...]``: ``u @ it`` gives every ``A_g u``."""

        def compute() -> Tensor:
            m = mats()
            return m.transpose(1, 2).permute(1, 0, 2).reshape(self.d_in, -1)

        return self._cached(key, compute)

    def relation_errors(self) -> dict[str, float]:
        """Relative Frobenius error ``||w - I|| / ||I||`` of each defining relation ``w = I``:
        ``r^n`` for C_n; ``r^n``, ``s^2`` and ``(s r)^2`` for D_n."""
        with torch.no_grad():
            gens = {k: v.detach().cpu() for k, v in self.generators().items()}
            return relation_errors(self.group, gens)

    def group_error(self) -> float:
        """The largest relation error (for C_n: ``||M^n - I||_F / ||I||_F``; 0 when exact)."""
        return max(self.relation_errors().values())

    def distance_to(self, R: Tensor, generator: str = "r") -> float:
        """Relative Frobenius distance ``||A - R|| / ||R||`` of one generator to a reference."""
        gens = self.generators()
        if generator not in gens:
            raise ValueError(f"generator must be one of {sorted(gens)}, got {generator!r}")
        if not isinstance(R, Tensor) or R.shape != (self.d_in, self.d_in):
            shape = tuple(R.shape) if isinstance(R, Tensor) else type(R).__name__
            raise ValueError(f"R must have shape ({self.d_in}, {self.d_in}), got {shape}")
        with torch.no_grad():
            mat = gens[generator].detach().double().cpu()
            return float((mat - R.double().cpu()).norm() / R.double().cpu().norm())

    def generator_distances(self, reference: Mapping[str, Tensor]) -> dict[str, float]:
        """:meth:`distance_to` for every generator named in ``reference``."""
        return {name: self.distance_to(mat, name) for name, mat in reference.items()}

    @property
    def n_fixed_params(self) -> int:
        """Scalars of the frozen representation (given to the model, not learned)."""
        attrs = {GENERATOR_ATTRS[name] for name in generator_names(self.group)}
        return sum(b.numel() for name, b in self.named_buffers() if name in attrs)

    @property
    def group_order(self) -> int:
        return self.group.order

    @property
    def lambda_inv(self) -> float:
        """The invariance weight (a field of the raw-encoder configs only)."""
        return self.cfg.lambda_inv

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group={self.group.name}, encoder={self.encoder}"

    # ------------------------------------------------------------------ shapes
    def check_orbits(self, batch: Tensor, name: str = "batch") -> Tensor:
        """Validate an orbit batch ``(B, group_order, d_in)`` and return it."""
        return _check_orbit_batch(batch, self.group_order, self.d_in, name)

    def _pose_index(self, pose: int | Tensor, n: int) -> Tensor:
        if isinstance(pose, Tensor):
            if pose.shape not in ((n,), ()):
                raise ValueError(f"pose must be an int or a ({n},) tensor, got {tuple(pose.shape)}")
            idx = pose.long().expand(n) if pose.ndim == 0 else pose.long()
        elif isinstance(pose, int) and not isinstance(pose, bool):
            idx = torch.full((n,), pose, dtype=torch.long, device=self.W_dec.device)
        else:
            raise ValueError(f"pose must be an int, a tensor or None, got {type(pose).__name__}")
        if n and (idx.min() < 0 or idx.max() >= self.group_order):
            raise ValueError(
                f"pose values must be in 0..{self.group_order - 1}, got {idx.min()}..{idx.max()}"
            )
        return idx

    # ------------------------------------------------------------------ the model
    def encode_centred(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """Latents and pre-activations of centred inputs ``c`` (..., d_in)."""
        pre = c @ self.W_enc + self.b_enc
        lead = pre.shape[:-1]
        return self.activation(pre.reshape(-1, self.d_sae)).reshape(*lead, self.d_sae), pre

    def decode_at(self, z: Tensor, pose: int | Tensor) -> Tensor:
        """``rho(g_p) W_dec z + b_dec`` for latents (N, d_sae) at pose ``p`` (int or (N,))."""
        idx = self._pose_index(pose, z.shape[0])
        return _apply_by_pose(z @ self.W_dec, self.representation(), idx) + self.b_dec

    def decode_orbits(self, z: Tensor) -> Tensor:
        """Reconstruct every pose from one latent each: (B, d_sae) -> (B, order, d_in)."""
        u = z @ self.W_dec
        stacked = self._stacked_transposes("rho_T", self.representation)
        return (u @ stacked).reshape(z.shape[0], self.group_order, self.d_in) + self.b_dec

    def _best_pose(self, flat: Tensor, recon_all: Tensor) -> tuple[Tensor, Tensor]:
        """Pose of least error and its reconstruction, from every pose's (N, order, d)."""
        err = (recon_all - flat.unsqueeze(1)).pow(2).sum(-1)
        idx = err.argmin(-1)
        recon = recon_all.gather(1, idx.view(-1, 1, 1).expand(-1, 1, self.d_in)).squeeze(1)
        return idx, recon

    def _flat_outputs(self, flat: Tensor, pose: Pose) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Latents, reconstruction, pre-activations and pose (inferred if None) of (N, d_in)."""
        z, pre = self.encode_centred(flat - self.b_dec)
        if pose is None:
            idx, recon = self._best_pose(flat, self.decode_orbits(z))
            return z, recon, pre, idx
        idx = self._pose_index(pose.reshape(-1) if isinstance(pose, Tensor) else pose, len(flat))
        return z, self.decode_at(z, idx), pre, idx

    @torch.no_grad()
    def infer_pose(self, h: Tensor) -> Tensor:
        """``p_hat = argmin_p ||h - (rho(g_p) W_dec z + b_dec)||`` for activations (..., d_in)."""
        flat, lead = self._flatten(h)
        return self._flat_outputs(flat, None)[3].reshape(lead)

    def encode(self, h: Tensor, pose: Pose = None) -> Tensor:
        """Latents (..., d_sae) of activations (..., d_in); the pose (None: inferred) matters
        only for the canonicalising variant."""
        flat, lead = self._flatten(h)
        if pose is not None and self.encoder == "raw":
            self._pose_index(pose.reshape(-1) if isinstance(pose, Tensor) else pose, len(flat))
            return self.encode_centred(flat - self.b_dec)[0].reshape(*lead, self.d_sae)
        return self._flat_outputs(flat, pose)[0].reshape(*lead, self.d_sae)

    def decode(self, z: Tensor, pose: int | Tensor = 0) -> Tensor:
        """Reconstruction (..., d_in) of latents (..., d_sae) at ``pose`` (default 0)."""
        flat, lead = self._flatten_latents(z)
        if isinstance(pose, Tensor):
            pose = pose.reshape(-1)
        return self.decode_at(flat, pose).reshape(*lead, self.d_in)

    def forward(self, h: Tensor, pose: Pose = None) -> SAEOutput:
        """Encode and decode activations (..., d_in) at ``pose`` (None: inferred per row)."""
        flat, lead = self._flatten(h)
        z, recon, pre, _ = self._flat_outputs(flat, pose)
        return SAEOutput(
            latents=z.reshape(*lead, self.d_sae),
            recon=recon.reshape(*lead, self.d_in),
            pre_acts=pre.reshape(*lead, self.d_sae),
        )

    # ------------------------------------------------------------------ evaluation on orbits
    def _check_pose_mode(self, pose: str) -> None:
        if pose not in POSE_MODES:
            raise ValueError(f"pose must be one of {POSE_MODES}, got {pose!r}")

    def _orbit_outputs_oracle(self, acts: Tensor) -> tuple[Tensor, Tensor]:
        z, _ = self.encode_centred(acts - self.b_dec)
        return z, _apply_per_pose(z @ self.W_dec, self.representation()) + self.b_dec

    @torch.no_grad()
    def orbit_outputs(self, acts: Tensor, pose: str = "inferred") -> tuple[Tensor, Tensor, Tensor]:
        """Latents (N, G, d_sae), reconstructions (N, G, d_in) and the poses used (N, G) of
        orbit activations (N, G, d_in): ``"inferred"`` (argmin over poses) or ``"oracle"``
        (column ``p`` of the orbit is pose ``p``)."""
        self.check_orbits(acts, "acts")
        self._check_pose_mode(pose)
        n, order, d = acts.shape
        if pose == "oracle":
            z, recon = self._orbit_outputs_oracle(acts)
            return z, recon, torch.arange(order, device=acts.device).expand(n, order).clone()
        z, recon, _, idx = self._flat_outputs(acts.reshape(n * order, d), None)
        return z.reshape(n, order, -1), recon.reshape(n, order, d), idx.reshape(n, order)

    def orbit_latents(self, acts: Tensor, pose: str = "inferred") -> Tensor:
        """Latents (N, G, d_sae) of orbit activations (N, G, d_in) (see :meth:`orbit_outputs`)."""
        return self.orbit_outputs(acts, pose)[0]

    def orbit_reconstructions(self, acts: Tensor, pose: str = "inferred") -> Tensor:
        """Reconstructions (N, G, d_in) of orbit activations (see :meth:`orbit_outputs`)."""
        return self.orbit_outputs(acts, pose)[1]

    # ------------------------------------------------------------------ training
    def check_batch(self, batch: Tensor) -> None:
        """ValueError unless ``batch`` is an orbit batch (B, group_order, d_in)."""
        self.check_orbits(batch)

    def stacked_representation(self, stack: Stack) -> Tensor:
        """``rho(g)`` of every SAE of a stack and every element: (S, order, d_in, d_in).

        Learned generators: built from the stacked generator parameters (differentiable);
        fixed ones: each SAE's own (cached) :meth:`representation`, once per stack.
        """
        if self.learns_representation:
            gens = {name: stack[GENERATOR_ATTRS[name]] for name in generator_names(self.group)}
            return representation_matrices(self.group, gens)
        return stack.cached(
            "rho", lambda: torch.stack([sae.representation().detach() for sae in stack.saes])
        )

    def stacked_representation_inverse(self, stack: Stack, rho: Tensor) -> Tensor:
        """``rho(g)^-1`` of every SAE of a stack (S, order, d_in, d_in), given its ``rho``:
        each SAE's own (cached) :meth:`representation_inverse`."""
        return stack.cached(
            "rho_inv",
            lambda: torch.stack([sae.representation_inverse().detach() for sae in stack.saes]),
        )

    def _representation_terms(
        self, stack: Stack, batch: Tensor, rho: Tensor
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Extra weighted loss terms on the representation, name -> (weight (S,), value (S,))
        (none for a fixed one)."""
        return {}

    def stacked_loss(self, stack: Stack, batch: Tensor, dead: Tensor | None) -> StackedLoss:
        """The orbit loss (module docstring) of S SAEs of this class on orbit batches
        (S, B, G, d_in): per-element MSE of every pose's ``rho(g_p) W_dec z_p + b_dec``,
        ``lambda_inv`` invariance, the ``_representation_terms``, AuxK on per-pose
        residuals. Canonicalising encoders read ``rho(g_p)^-1 (h_p - b_dec)`` (their mean with
        :attr:`latent_per_orbit`, AuxK then on canonical residuals)."""
        W_dec, b_dec = stack["W_dec"], stack["b_dec"]
        s, b, g, d = batch.shape
        rho = self.stacked_representation(stack)
        centred = batch - b_dec[:, None, None]
        enc_in = centred
        if self.encoder != "raw":
            enc_in = _apply_per_pose_stacked(
                centred, self.stacked_representation_inverse(stack, rho)
            )
            if self.latent_per_orbit:
                enc_in = enc_in.mean(2)
        flat = enc_in.reshape(s, -1, d)
        pre, idx, vals = topk_codes(stack, flat)
        u = stacked_decode(idx, vals, W_dec)  # (S, N, d), no bias
        if self.latent_per_orbit:
            recon = torch.einsum("sbj,spij->sbpi", u, rho)
        else:
            recon = _apply_per_pose_stacked(u.view(s, b, g, d), rho)
        recon = recon + b_dec[:, None, None]
        mse = (recon - batch).pow(2).mean((1, 2, 3))
        lead = (b,) if self.latent_per_orbit else (b, g)
        out = StackedLoss(mse, {"mse": mse}, idx, vals.detach(), recon, batch, lead)
        if not self.latent_per_orbit:
            z = torch.zeros(s, flat.shape[1], self.d_sae, dtype=vals.dtype, device=vals.device)
            z = z.scatter(-1, idx, vals).view(s, b, g, self.d_sae)
            inv = (z - z.mean(2, keepdim=True)).pow(2).sum((1, 2, 3)) / float(b * g * d)
            out.add("invariance", stack.per_sae("lambda_inv"), inv)
        for name, (weight, value) in self._representation_terms(stack, batch, rho).items():
            out.add(name, weight, value)
        if dead is not None:
            if self.encoder == "raw":
                residual = (batch - recon.detach()).reshape(s, -1, d)

                def transform(a: Tensor) -> Tensor:
                    return _apply_per_pose_stacked(a.view(s, b, g, d), rho).reshape(s, -1, d)

                aux = stacked_auxk(stack, flat, pre, dead, residual, transform)
            else:
                aux = stacked_auxk(stack, flat, pre, dead, flat - u.detach())
            out.add("auxk", stack.per_sae("aux_coef"), aux)
        return out

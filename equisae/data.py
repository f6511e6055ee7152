"""The Shapes data: anti-aliased RGB images of simple shapes with known factors, and their orbits.

Every image is rendered from its factors by evaluating signed-distance functions at the pixel
centres (vectorised in torch, no per-pixel loops). Coordinates are centred on the image centre
(``x`` right, ``y`` up; see :mod:`equisae.groups`), so 90-degree rotations and horizontal flips
map pixel centres onto pixel centres, and rendering from transformed factors equals transforming
the rendered image exactly (``render(g f) == g render(f)``; tested to 1e-5, in practice 0).

Factors (``ShapesDataset.factors``, each an (N,) tensor):

* ``shape`` (index into :data:`SHAPES`), ``colour`` (into :data:`COLOURS`), ``scale`` (into
  :data:`SCALE_FRACTIONS`): invariant under the group.
* ``quadrant``: 0..3 for (+,+), (-,+), (-,-), (+,-) of the shape centre; a quarter turn adds 1.
* ``orientation``: 0..3 quarter turns of the shape as drawn; -1 for shapes every 90-degree
  rotation leaves unchanged (circle, square, plus). Generated (canonical) images are drawn at
  orientation 0 under ``ShapesConfig(representative="fixed")`` (the default) and at a random
  one under ``"random"``; see :class:`ShapesConfig`.
* ``mirror``: 0/1 whether a chiral shape (the L) is drawn mirrored; -1 for mirror-symmetric
  shapes. Only a flip changes it (it is not among :data:`EQUIVARIANT_FACTORS`, which are C4's).
* ``cue``: direction (quarter turns) of the orientation cue, a ground line drawn along the
  bottom edge of every canonical image (``cue == 0``); -1 when the config has no cue.
* ``x``, ``y`` (float32): the shape centre in centred pixel coordinates.

Background noise, when on, is drawn once per image and stored with the sample
(``ShapesDataset.noise``); orbits transform it with the image, so equivariance stays exact.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from equisae.groups import Group, get_group
from equisae.modes import get_mode

__all__ = [
    "SHAPES",
    "SHAPE_SYMMETRY",
    "COLOURS",
    "SCALE_FRACTIONS",
    "INVARIANT_FACTORS",
    "EQUIVARIANT_FACTORS",
    "FACTOR_CLASSES",
    "FACTOR_NAMES",
    "SPLITS",
    "REPRESENTATIVES",
    "ShapesConfig",
    "ShapesDataset",
    "OrbitDataset",
    "standard_config",
    "dataset_sizes",
    "benchmark_size",
    "sample_factors",
    "render",
    "make_shapes",
    "make_splits",
    "transform_factors",
    "orbit",
    "equivariance_error",
    "equivariance_errors",
    "valid_mask",
    "render_throughput",
]

#: The shape classes; the ``shape`` factor indexes this tuple.
SHAPES: tuple[str, ...] = ("circle", "square", "plus", "triangle", "T", "half_disc", "L")
#: Which symmetries of the square each shape has, as drawn at orientation 0:
#: ``"full"``: all of D4 (orientation -1, mirror -1); ``"mirror"``: the flip x -> -x
#: (mirror -1); ``"none"``: chiral, no symmetry.
SHAPE_SYMMETRY: dict[str, str] = {
    "circle": "full",
    "square": "full",
    "plus": "full",
    "triangle": "mirror",
    "T": "mirror",
    "half_disc": "mirror",
    "L": "none",
}
#: The colour classes (name -> RGB in [0, 1]); the ``colour`` factor indexes them in order.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.20, 0.80, 0.25),
    "blue": (0.20, 0.40, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "magenta": (0.85, 0.25, 0.85),
}
#: Half extent of each scale class, as a fraction of the image size.
SCALE_FRACTIONS: tuple[float, ...] = (0.14, 0.19, 0.24)

#: Factors every group element leaves unchanged.
INVARIANT_FACTORS: tuple[str, ...] = ("shape", "colour", "scale")
#: Factors a quarter turn moves (``orientation`` is -1 where undefined).
EQUIVARIANT_FACTORS: tuple[str, ...] = ("quadrant", "orientation")
#: Number of classes of every discrete factor (-1 marks "not defined" and is not a class).
FACTOR_CLASSES: dict[str, int] = {
    "shape": len(SHAPES),
    "colour": len(COLOURS),
    "scale": len(SCALE_FRACTIONS),
    "quadrant": 4,
    "orientation": 4,
    "mirror": 2,
    "cue": 4,
}
#: Every factor name, discrete ones first, then the continuous centre ``x``, ``y``.
FACTOR_NAMES: tuple[str, ...] = (*FACTOR_CLASSES, "x", "y")
#: The split names :func:`make_splits` is usually given.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The settings of ``ShapesConfig.representative``: which orbit member is generated.
REPRESENTATIVES: tuple[str, ...] = ("fixed", "random")
_MIN_OFFSET = 0.5  # smallest |x|, |y| of a shape centre, so the quadrant is always defined


@dataclass(frozen=True)
class ShapesConfig:
    """How Shapes images are drawn.

    ``orientation_cue`` draws a ground line of ``cue_width`` pixels along the bottom edge of
    every canonical image; rotations move it, so a model trained only on canonical images never
    sees it elsewhere. ``background_noise`` is the standard deviation of Gaussian pixel noise
    added to the background (stored per sample and transformed with it). ``random_mirror``
    also draws the chiral L mirrored in canonical images.

    ``representative`` chooses which member of each orbit is generated (the paper's two
    settings):

    * ``"fixed"`` (default; the paper's main setting): every generated image is drawn at
      orientation 0 (-1 for the C4-symmetric circle, square and plus). The pose ``p`` of an orbit
      is then the absolute orientation: in ``orbit(ds, "C4")`` the ``orientation`` factor at
      pose ``p`` equals ``p`` wherever it is defined, so probing orientation is probing the pose
      (and an invariant latent that predicts orientation leaks the pose). The orientation cue
      (the ground line, ``cue == 0`` in canonical images) then always sits below an upright
      shape: at every pose ``cue == orientation == p``, so cue and shape orientation are
      redundant, and a model trained on canonical images only (``cnn_canonical``) never sees a
      rotated shape nor a moved cue. Quadrant and position stay random, so ``quadrant`` is not a
      function of the pose.
    * ``"random"`` (the paper's appendix setting; this package's behaviour before the option
      existed, bit for bit under the same seed): each generated image has a uniformly random
      orientation, so the pose is only relative to an arbitrary start, the cue is independent of
      the shape's orientation, and a canonical-only model sees every shape orientation but the
      cue only at the bottom.

    The set of images in an orbit is the same under both; only which one is pose 0 changes.
    """

    image_size: int = 32
    background_noise: float = 0.0
    orientation_cue: bool = False
    cue_width: float = 2.0
    random_mirror: bool = False
    background: tuple[float, float, float] = (0.06, 0.06, 0.08)
    cue_colour: tuple[float, float, float] = (0.60, 0.50, 0.40)
    representative: str = "fixed"

    def __post_init__(self) -> None:
        if self.representative not in REPRESENTATIVES:
            raise ValueError(
                f"representative must be one of {REPRESENTATIVES}, got {self.representative!r}"
            )
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise ValueError(f"image_size must be an int, got {self.image_size!r}")
        if self.image_size < 12:
            raise ValueError(f"image_size must be >= 12 pixels, got {self.image_size}")
        if not self.background_noise >= 0:
            raise ValueError(f"background_noise must be >= 0, got {self.background_noise}")
        if not self.cue_width > 0:
            raise ValueError(f"cue_width must be > 0 pixels, got {self.cue_width}")
        for name in ("background", "cue_colour"):
            value = getattr(self, name)
            if len(value) != 3 or not all(0.0 <= float(c) <= 1.0 for c in value):
                raise ValueError(f"{name} must be 3 values in [0, 1], got {value!r}")
        if self.max_offsets()[-1] <= _MIN_OFFSET:
            raise ValueError(
                f"image_size={self.image_size} with cue_width={self.cue_width} leaves no room "
                "to place the largest shape off the axes; use a larger image"
            )

    @property
    def channels(self) -> int:
        """Number of colour channels (RGB)."""
        return 3

    def half_extents(self) -> tuple[float, ...]:
        """Half extent in pixels of each scale class."""
        return tuple(f * self.image_size for f in SCALE_FRACTIONS)

    def max_offsets(self) -> tuple[float, ...]:
        """Largest |x| and |y| of a shape centre per scale class, keeping it clear of every edge."""
        margin = 1.0 + (self.cue_width if self.orientation_cue else 0.0)
        bound = self.image_size / 2 - margin
        return tuple(bound - r for r in self.half_extents())


def standard_config(representative: str = "fixed") -> ShapesConfig:
    """The configuration every notebook uses: 32x32, orientation cue on, light background noise.

    The cue makes a base model trained only on canonical images measurably less equivariant
    than one trained with rotations; the noise keeps images from being trivially sparse.
    ``representative`` is the canonical representative of the orbits (``"fixed"``, the Method page's
    default, or ``"random"``); the base models are trained on the ``"random"`` setting (every
    orientation), so both settings of the SAE experiments share the same base models.
    """
    return ShapesConfig(
        image_size=32, background_noise=0.03, orientation_cue=True, representative=representative
    )


def dataset_sizes(mode: str) -> dict[str, int]:
    """Split sizes for a run mode: ``"quick"`` (2000/500/500) or ``"full"`` (10000/2000/2000);
    :attr:`equisae.modes.Mode.data`."""
    return get_mode(mode).data.splits()


def benchmark_size(mode: str) -> int:
    """How many images a rendering-speed measurement draws: 5,000 (quick) or 50,000 (full)."""
    return get_mode(mode).data.benchmark


# --------------------------------------------------------------------------------------------
# Signed distance functions, in a unit frame where each shape fits in [-1, 1]^2.
# Every one is written with |vx| or symmetric min/max so that its symmetries hold bit-exactly.


def _box(vx: Tensor, vy: Tensor, hx: float, hy: float, cx: float = 0.0, cy: float = 0.0) -> Tensor:
    qx = (vx - cx).abs() - hx
    qy = (vy - cy).abs() - hy
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    inside = torch.minimum(torch.maximum(qx, qy), torch.zeros_like(qx))
    return outside + inside


def _circle(vx: Tensor, vy: Tensor) -> Tensor:
    return torch.sqrt(vx**2 + vy**2) - 0.9


def _square(vx: Tensor, vy: Tensor) -> Tensor:
    return _box(vx, vy, 0.78, 0.78)


def _plus(vx: Tensor, vy: Tensor) -> Tensor:
    return torch.minimum(_box(vx, vy, 0.95, 0.3), _box(vx, vy, 0.3, 0.95))


_TRI_TOP, _TRI_BASE, _TRI_HALF = 0.95, -0.8, 0.95
_TRI_NORMAL = np.array([_TRI_TOP - _TRI_BASE, _TRI_HALF]) / np.hypot(
    _TRI_TOP - _TRI_BASE, _TRI_HALF
)


def _triangle(vx: Tensor, vy: Tensor) -> Tensor:
    side = float(_TRI_NORMAL[0]) * (vx.abs() - _TRI_HALF) + float(_TRI_NORMAL[1]) * (vy - _TRI_BASE)
    return torch.maximum(side, _TRI_BASE - vy)


def _tee(vx: Tensor, vy: Tensor) -> Tensor:
    bar = _box(vx, vy, 0.95, 0.25, cy=0.7)
    stem = _box(vx, vy, 0.25, 0.85, cy=-0.1)
    return torch.minimum(bar, stem)


def _half_disc(vx: Tensor, vy: Tensor) -> Tensor:
    disc = torch.sqrt(vx**2 + (vy + 0.45) ** 2) - 0.95
    return torch.maximum(disc, -(vy + 0.45))


def _ell(vx: Tensor, vy: Tensor) -> Tensor:
    upright = _box(vx, vy, 0.3, 0.95, cx=-0.6)
    foot = _box(vx, vy, 0.9, 0.3, cy=-0.65)
    return torch.minimum(upright, foot)


_SDF: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": _circle,
    "square": _square,
    "plus": _plus,
    "triangle": _triangle,
    "T": _tee,
    "half_disc": _half_disc,
    "L": _ell,
}


_COS = torch.tensor([1.0, 0.0, -1.0, 0.0])
_SIN = torch.tensor([0.0, 1.0, 0.0, -1.0])


def _unrotate(x: Tensor, y: Tensor, k: Tensor, flip: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Rotate (x, y) clockwise by ``k`` quarter turns, then negate x where ``flip``.

    Per element and exact: the multipliers are 0 and +-1, so this only swaps and negates.
    """
    cos, sin = _COS[k % 4], _SIN[k % 4]
    sign_x = 1.0 if flip is None else 1.0 - 2.0 * flip.to(torch.float32)
    return (x * cos + y * sin) * sign_x, y * cos - x * sin


# --------------------------------------------------------------------------------------------
# Factors


def _quadrant(x: Tensor, y: Tensor) -> Tensor:
    q = torch.where(y > 0, torch.where(x > 0, 0, 1), torch.where(x < 0, 2, 3))
    return q.to(torch.int64)


def _symmetry_codes() -> Tensor:
    codes = {"full": 2, "mirror": 1, "none": 0}
    return torch.tensor([codes[SHAPE_SYMMETRY[s]] for s in SHAPES], dtype=torch.int64)


def _canonical_pose(shape: Tensor, rot: Tensor, mir: Tensor) -> tuple[Tensor, Tensor]:
    """Orientation and mirror factors of a shape drawn at pose r^rot s^mir (modulo its symmetry)."""
    sym = _symmetry_codes()[shape]
    orientation = torch.where(sym == 2, -1, rot % 4)
    mirror = torch.where(sym >= 1, -1, mir % 2)
    return orientation.to(torch.int64), mirror.to(torch.int64)


def _check_factors(factors: Mapping[str, Tensor]) -> int:
    missing = [name for name in FACTOR_NAMES if name not in factors]
    if missing:
        raise KeyError(f"factors is missing {missing}; expected all of {list(FACTOR_NAMES)}")
    n = factors["shape"].shape
    for name in FACTOR_NAMES:
        if factors[name].shape != n or factors[name].ndim != 1:
            raise ValueError(
                f"factor {name!r} must have shape {tuple(n)} (one value per image), "
                f"got {tuple(factors[name].shape)}"
            )
    for name, classes in FACTOR_CLASSES.items():
        values = factors[name]
        if values.numel() and (values.min() < -1 or values.max() >= classes):
            raise ValueError(f"factor {name!r} must lie in -1..{classes - 1}")
    for name in INVARIANT_FACTORS:
        if factors[name].numel() and factors[name].min() < 0:
            raise ValueError(f"factor {name!r} must be >= 0, got {int(factors[name].min())}")
    return int(n[0])


def sample_factors(n: int, cfg: ShapesConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """Draw the factors of ``n`` canonical images (uniform classes, centres off the axes)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    g = generator
    shape = torch.randint(len(SHAPES), (n,), generator=g)
    colour = torch.randint(len(COLOURS), (n,), generator=g)
    scale = torch.randint(len(SCALE_FRACTIONS), (n,), generator=g)
    quadrant = torch.randint(4, (n,), generator=g)
    rot = torch.randint(4, (n,), generator=g)
    mir = torch.randint(2, (n,), generator=g)
    offsets = torch.rand(n, 2, generator=g)
    if not cfg.random_mirror:
        mir = torch.zeros_like(mir)
    if cfg.representative == "fixed":
        rot = torch.zeros_like(rot)  # drawn anyway, so the other factors match "random"
    max_off = torch.tensor(cfg.max_offsets(), dtype=torch.float32)[scale]
    mag = _MIN_OFFSET + offsets * (max_off - _MIN_OFFSET)[:, None]
    sign_x = torch.tensor([1.0, -1.0, -1.0, 1.0])[quadrant]
    sign_y = torch.tensor([1.0, 1.0, -1.0, -1.0])[quadrant]
    orientation, mirror = _canonical_pose(shape, rot, mir)
    cue = torch.full((n,), 0 if cfg.orientation_cue else -1, dtype=torch.int64)
    return {
        "shape": shape,
        "colour": colour,
        "scale": scale,
        "quadrant": quadrant,
        "orientation": orientation,
        "mirror": mirror,
        "cue": cue,
        "x": (sign_x * mag[:, 0]).to(torch.float32),
        "y": (sign_y * mag[:, 1]).to(torch.float32),
    }


# --------------------------------------------------------------------------------------------
# Rendering


def _pixel_grid(size: int) -> tuple[Tensor, Tensor]:
    centre = (size - 1) / 2
    coords = torch.arange(size, dtype=torch.float32) - centre
    gx = coords[None, :].expand(size, size)
    gy = (-coords)[:, None].expand(size, size)
    return gx, gy


def _coverage(sdf_pixels: Tensor) -> Tensor:
    """Anti-aliased coverage: a one-pixel linear ramp across the edge."""
    return (0.5 - sdf_pixels).clamp(0.0, 1.0)


def _render_batch(f: Mapping[str, Tensor], cfg: ShapesConfig, noise: Tensor | None) -> Tensor:
    n, size = f["shape"].shape[0], cfg.image_size
    gx, gy = _pixel_grid(size)
    bg = torch.tensor(cfg.background, dtype=torch.float32).view(1, 3, 1, 1)
    img = bg.expand(n, 3, size, size).clone()
    if noise is not None:
        img = img + cfg.background_noise * noise
    cue = f["cue"]
    if (cue >= 0).any():
        _, cy = _unrotate(gx[None], gy[None], torch.arange(4)[:, None, None])
        maps = _coverage(cy + size / 2 - cfg.cue_width)  # (4, H, W): the line in each direction
        alpha = maps[cue.clamp(min=0)] * (cue >= 0)[:, None, None]
        col = torch.tensor(cfg.cue_colour, dtype=torch.float32).view(1, 3, 1, 1)
        img = img + alpha[:, None] * (col - img)
    half = torch.tensor(cfg.half_extents(), dtype=torch.float32)[f["scale"]][:, None, None]
    lx, ly = _unrotate(
        gx[None] - f["x"][:, None, None],
        gy[None] - f["y"][:, None, None],
        f["orientation"].clamp(min=0)[:, None, None],
        (f["mirror"] == 1)[:, None, None],
    )
    vx, vy = lx / half, ly / half
    sdf = torch.empty(n, size, size)
    for index, name in enumerate(SHAPES):
        rows = (f["shape"] == index).nonzero().squeeze(1)
        if rows.numel():
            sdf[rows] = _SDF[name](vx[rows], vy[rows])
    alpha = _coverage(sdf * half)
    colours = torch.tensor(list(COLOURS.values()), dtype=torch.float32)[f["colour"]]
    img = img + alpha[:, None] * (colours[:, :, None, None] - img)
    return img.clamp(0.0, 1.0)


def render(
    factors: Mapping[str, Tensor],
    cfg: ShapesConfig,
    noise: Tensor | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> Tensor:
    """Render images (N, 3, H, W) in [0, 1] from factors (see module docstring).

    ``noise`` (N, 1, H, W) is unit-variance background noise, scaled by
    ``cfg.background_noise``; None means no noise.
    """
    n = _check_factors(factors)
    size = cfg.image_size
    if noise is not None and tuple(noise.shape) != (n, 1, size, size):
        raise ValueError(f"noise must have shape {(n, 1, size, size)}, got {tuple(noise.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = torch.empty(n, 3, size, size)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="render", disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        batch = {name: factors[name][sl] for name in FACTOR_NAMES}
        out[sl] = _render_batch(batch, cfg, None if noise is None else noise[sl])
    return out


# --------------------------------------------------------------------------------------------
# Data sets


@dataclass
class ShapesDataset:
    """Canonical images (N, 3, H, W), their factors (each (N,)) and stored background noise."""

    images: Tensor
    factors: dict[str, Tensor]
    config: ShapesConfig
    noise: Tensor | None = None
    seed: int | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor | slice) -> ShapesDataset:
        """The images selected by ``index`` (a slice, an index tensor or a boolean mask)."""
        return ShapesDataset(
            images=self.images[index],
            factors={k: v[index] for k, v in self.factors.items()},
            config=self.config,
            noise=None if self.noise is None else self.noise[index],
            seed=self.seed,
        )


@dataclass
class OrbitDataset:
    """Every group transform of each image: images (N, |G|, 3, H, W), factors[name] (N, |G|).

    ``poses[i, p] == p``: the canonical image ``i`` acted on by group element ``p``.
    """

    images: Tensor
    factors: dict[str, Tensor]
    poses: Tensor
    group_name: str
    config: ShapesConfig
    noise: Tensor | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def order(self) -> int:
        """The size of the group, |G|."""
        return self.images.shape[1]

    def flat_images(self) -> Tensor:
        """Images as one batch (N * |G|, 3, H, W), pose varying fastest."""
        return self.images.reshape(-1, *self.images.shape[2:])

    def flat_factors(self) -> dict[str, Tensor]:
        """Factors flattened like :meth:`flat_images`, plus ``pose``."""
        flat = {k: v.reshape(-1) for k, v in self.factors.items()}
        flat["pose"] = self.poses.reshape(-1)
        return flat


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _derived_seed(seed: int, name: str) -> int:
    state = np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(2)
    return int(state[0]) << 32 | int(state[1]) >> 1


def make_shapes(n: int, cfg: ShapesConfig, seed: int, progress: bool = False) -> ShapesDataset:
    """Draw and render ``n`` canonical images; the same seed gives bit-identical data."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not isinstance(cfg, ShapesConfig):
        raise ValueError(f"cfg must be a ShapesConfig, got {type(cfg).__name__}")
    seed = _check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    factors = sample_factors(n, cfg, g)
    noise = None
    if cfg.background_noise > 0:
        size = cfg.image_size
        noise = torch.randn(n, 1, size, size, generator=g)
    images = render(factors, cfg, noise, progress=progress)
    return ShapesDataset(images=images, factors=factors, config=cfg, noise=noise, seed=seed)


def make_splits(
    sizes: Mapping[str, int], cfg: ShapesConfig, seed: int, progress: bool = False
) -> dict[str, ShapesDataset]:
    """Independent draws for each named split (usually "train", "val", "test").

    Each split uses its own seed derived from ``seed`` and the split name, so splits are
    disjoint draws and a split does not change when another one's size does.
    """
    if not sizes:
        raise ValueError("sizes must name at least one split, e.g. {'train': 2000}")
    seed = _check_seed(seed)
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"sizes[{name!r}] must be an int >= 1, got {size!r}")
    return {
        name: make_shapes(int(size), cfg, _derived_seed(seed, name), progress=progress)
        for name, size in sizes.items()
    }


# --------------------------------------------------------------------------------------------
# Group action on factors and orbits


def _as_d4(group: Group, a: int) -> tuple[int, int]:
    """Group element ``a`` as (quarter turns, flip) of the square, or ValueError."""
    angle = group.rotation_angle(a)
    quarter = angle / 90.0
    if abs(quarter - round(quarter)) > 1e-9:
        raise ValueError(
            f"element {a} of {group.name} rotates by {angle:g} degrees; Shapes factors are "
            "defined only under 90-degree rotations and flips (subgroups of D4)"
        )
    return round(quarter) % 4, int(group.is_reflection(a))


def transform_factors(factors: Mapping[str, Tensor], group: Group, a: int) -> dict[str, Tensor]:
    """The factors of ``group.act_images(render(factors), a)``.

    Shape, colour and scale are unchanged; the centre, quadrant, orientation, mirror and cue
    move with the group element. Works on factors of any shape (e.g. (N,) or (N, |G|)).
    """
    k, flip = _as_d4(group, a)
    shape_ = factors["shape"].shape
    f = {name: factors[name].reshape(-1) for name in FACTOR_NAMES if name in factors}
    _check_factors(f)
    xy = group.act_coords(torch.stack([f["x"], f["y"]], dim=-1), a)
    out = dict(f)
    out["x"], out["y"] = xy[:, 0].contiguous(), xy[:, 1].contiguous()
    out["quadrant"] = _quadrant(out["x"], out["y"])
    # Pose of the shape as a D4 element r^rot s^mir (a representative of its symmetry coset).
    rot, mir = f["orientation"].clamp(min=0), f["mirror"].clamp(min=0)
    sign = -1 if flip else 1
    out["orientation"], out["mirror"] = _canonical_pose(f["shape"], k + sign * rot, mir + flip)
    # The ground line is symmetric under the flip x -> -x, so only its direction matters.
    out["cue"] = torch.where(f["cue"] >= 0, (k + sign * f["cue"]) % 4, -1)
    return {name: v.reshape(shape_) for name, v in out.items()}


def orbit(ds: ShapesDataset, group: Group | str) -> OrbitDataset:
    """All |G| transforms of each canonical image, with factors and noise transformed alike."""
    group = get_group(group) if isinstance(group, str) else group
    if not isinstance(group, Group):
        raise ValueError(f"group must be a Group or a name like 'C4', got {type(group).__name__}")
    for a in group.elements():
        _as_d4(group, a)
    images = group.orbit_images(ds.images)
    per_pose = [transform_factors(ds.factors, group, a) for a in group.elements()]
    factors = {name: torch.stack([f[name] for f in per_pose], dim=1) for name in per_pose[0]}
    poses = torch.arange(group.order).expand(len(ds), group.order).clone()
    noise = None if ds.noise is None else group.orbit_images(ds.noise)
    return OrbitDataset(images, factors, poses, group.name, ds.config, noise)


def equivariance_errors(
    ds: ShapesDataset, group: Group | str, batch_size: int = 256, progress: bool = False
) -> Tensor:
    """Per group element ``a``: max |render(a f) - a render(f)| over all images and pixels."""
    group = get_group(group) if isinstance(group, str) else group
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    worst = torch.zeros(group.order)
    starts = range(0, len(ds), batch_size)
    for start in tqdm(starts, desc="equivariance", disable=not progress, leave=False):
        orb = orbit(ds.subset(slice(start, start + batch_size)), group)
        noise = None if orb.noise is None else orb.noise.reshape(-1, *orb.noise.shape[2:])
        rendered = render(orb.flat_factors(), ds.config, noise)
        diff = (rendered - orb.flat_images()).abs().reshape(len(orb), orb.order, -1)
        worst = torch.maximum(worst, diff.amax(dim=(0, 2)))
    return worst


def equivariance_error(ds: ShapesDataset, group: Group | str) -> float:
    """max |render(g f) - g render(f)| over all images, pixels and group elements."""
    return float(equivariance_errors(ds, group).max())


def valid_mask(factors: Mapping[str, Tensor], name: str) -> Tensor:
    """Where factor ``name`` is defined (>= 0): orientation is -1 for C4-symmetric shapes."""
    if name not in factors:
        raise KeyError(f"unknown factor {name!r}; available: {sorted(factors)}")
    if name not in FACTOR_CLASSES:
        raise ValueError(f"factor {name!r} is continuous; valid_mask is for class factors")
    return factors[name] >= 0


def render_throughput(
    n: int = 50_000, cfg: ShapesConfig | None = None, seed: int = 0, repeats: int = 1
) -> dict[str, float]:
    """Images per second of :func:`make_shapes`, best of ``repeats`` runs.

    Returns ``{"wall": ..., "cpu": ...}``: per wall-clock second and per CPU second of this
    process (the CPU figure is the meaningful one on a shared machine; with one torch thread).
    """
    cfg = cfg or standard_config()
    best_wall = best_cpu = float("inf")
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        make_shapes(n, cfg, seed)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {"wall": n / best_wall, "cpu": n / max(best_cpu, 1e-9)}

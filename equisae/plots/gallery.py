"""Pictures of latents: orbit strips, decoded atoms, purity bars, the planted atoms, and the
offline HTML gallery page (notebook 09, the book's gallery, ``equisae gallery``).

The page is static: ``index.html`` loads ``gallery-data.js`` (the latents' numbers as a script,
so that it opens from ``file://`` too), ``gallery.js`` and ``gallery.css`` (copied from the
book's ``_static``) and one WebP image per latent (rows: its top orbits, columns: the poses; a last row
with the decoded atom under each group element when the base model can decode).
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from equisae import io
from equisae.gallery import PURITY_METRICS, LatentGallery, class_name
from equisae.plots.findings import MAX_WIDTH

__all__ = [
    "GallerySection",
    "best_latent_for",
    "main_gallery",
    "page_summary",
    "purity_table_rows",
    "STATIC_FILES",
    "decoded_atoms",
    "latent_tiles",
    "plot_curated",
    "plot_planted_atoms",
    "plot_purity",
    "static_folder",
    "tiles_to_uint8",
    "top_orbit_images",
    "write_gallery_page",
]

#: the page's script and style, shipped in the book's ``_static`` folder
STATIC_FILES: tuple[str, ...] = ("gallery.js", "gallery.css")
DATA_FILE = "gallery-data.js"
#: lossy WebP keeps a latent's card at about 4 KB (lossless PNG: about 20 KB); every current
#: browser shows it, and the page stays small enough to ship every alive latent in the book
IMAGE_FORMAT = "webp"
IMAGE_OPTIONS: dict[str, Any] = {"quality": 70, "method": 0}


def static_folder() -> Path:
    """The folder holding :data:`STATIC_FILES` (``book/_static`` of the project)."""
    folder = Path(__file__).resolve().parents[2] / "book" / "_static"
    missing = [name for name in STATIC_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the gallery's {missing} are not in {folder}: install equisae from its repository "
            "(pip install -e .) so that book/_static is present"
        )
    return folder


# -------------------------------------------------------------------------------- images


def top_orbit_images(
    gallery: LatentGallery, images: Tensor, latents: Sequence[int], n_show: int = 3
) -> Tensor:
    """The orbits of each latent's ``n_show`` top orbits: ``(L, n_show, |G|, C, H, W)`` from
    the canonical ``images`` (N, C, H, W) the gallery's orbits were made of (one batched
    gather and one orbit transform, no loop over images)."""
    from equisae.groups import get_group

    if images.ndim != 4 or images.shape[0] != gallery.n_orbits:
        raise ValueError(
            f"images must have shape ({gallery.n_orbits}, C, H, W) like the gallery's orbits, "
            f"got {tuple(images.shape)}"
        )
    n_show = min(n_show, gallery.top_orbit.shape[1])
    idx = gallery.top_orbit[torch.as_tensor(list(latents), dtype=torch.long), :n_show]
    chosen = images[idx.reshape(-1)]
    orbit = get_group(gallery.group_name).orbit_images(chosen)
    return orbit.reshape(len(latents), n_show, *orbit.shape[1:])


@torch.no_grad()
def decoded_atoms(model: Any, gallery: LatentGallery, b_dec: Tensor, images: Tensor) -> Tensor:
    """What each atom adds to the base model's output, for every element and alive latent:
    ``decode(b_dec + v_j rho(g) W_dec[j]) - decode(b_dec)`` (``v_j``: the mean of latent j's
    top values), shown as ``0.5 + delta / (2 max |delta|)`` with the maximum over the latent's
    elements (grey: no change; the same contrast across its poses). Shape
    ``(|G| or 1, d_sae, C, H, W)``, zeros for dead latents (not decoded). Needs a model whose
    ``decode`` reads the hooked layer (the bottleneck); ``images`` (N, C, H, W) of the source
    give the shape of its code (the activations are flattened)."""
    atoms = gallery.atoms
    if atoms.numel() == 0:
        raise ValueError("the gallery holds no decoder atoms")
    alive = torch.nonzero(gallery.alive).flatten()
    scale = gallery.top_value.mean(1).clamp_min(0)[alive]
    codes = b_dec.float()[None, None] + scale[None, :, None] * atoms[:, alive]
    was_training = model.training
    model.eval()
    try:
        code_shape = model.encode(images[:1].float()).shape[1:]
        base = model.decode(b_dec.float().reshape(1, *code_shape))
        delta = model.decode(codes.reshape(-1, *code_shape)) - base
    finally:
        model.train(was_training)
    delta = delta.reshape(atoms.shape[0], len(alive), *delta.shape[1:])
    peak = delta.abs().amax(dim=(0, 2, 3, 4), keepdim=True).clamp_min(1e-12)
    out = (0.5 + delta / (2 * peak)).clamp(0, 1)
    full = torch.zeros(atoms.shape[0], atoms.shape[1], *out.shape[2:])
    full[:, alive] = out
    return full


def tiles_to_uint8(tiles: Tensor, gap: int = 1) -> np.ndarray:
    """A grid of images ``(rows, cols, C, H, W)`` in [0, 1] as one ``(H', W', 3)`` uint8 array
    with ``gap`` pixels of grey between tiles (grey channels are repeated)."""
    rows, cols, c, h, w = tiles.shape
    x = tiles.float().clamp(0, 1)
    if c == 1:
        x = x.expand(rows, cols, 3, h, w)
    elif c != 3:
        x = x[:, :, :1].expand(rows, cols, 3, h, w)
    padded = torch.nn.functional.pad(x, (0, gap, 0, gap), value=0.5)
    canvas = padded.permute(2, 0, 3, 1, 4).reshape(3, rows * (h + gap), cols * (w + gap))
    canvas = canvas[:, : rows * (h + gap) - gap, : cols * (w + gap) - gap]
    return (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def latent_tiles(orbits: Tensor, atoms: Tensor | None = None) -> Tensor:
    """One latent's tiles: its top orbits ``(n_show, |G|, C, H, W)`` and, if given, a last row
    with its decoded atom under each element ``(|G| or 1, C, H, W)`` (padded with black)."""
    rows = [orbits]
    if atoms is not None:
        order = orbits.shape[1]
        row = torch.zeros(order, *orbits.shape[2:])
        row[: atoms.shape[0]] = atoms
        rows.append(row[None])
    return torch.cat(rows)


# -------------------------------------------------------------------------------- figures


def plot_purity(
    records: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = (
        "invariant_fraction",
        "pose_selective_fraction",
        "monosemantic_fraction",
        "duplicate_fraction",
    ),
    order: Sequence[str] | None = None,
) -> Figure:
    """Bars of the purity metrics (mean over seeds, error bars: sd) per SAE type, one panel per
    metric, one bar group per target, from :func:`equisae.gallery.purity_records`."""
    from equisae.plots.findings import colour_of, label_of

    targets = sorted({(r["model"], r["layer"]) for r in records})
    types = list(order) if order is not None else sorted({r["sae_type"] for r in records})
    n_cols = min(len(metrics), 2)  # panels wrap into rows: the figure fits the book's column
    n_rows = -(-len(metrics) // n_cols)
    fig, grid = plt.subplots(
        n_rows,
        n_cols,
        figsize=(MAX_WIDTH, 2.9 * n_rows),
        constrained_layout=True,
        squeeze=False,
    )
    axes = grid.ravel()[: len(metrics)]
    for spare in grid.ravel()[len(metrics) :]:
        spare.set_visible(False)
    width = 0.8 / max(len(types), 1)
    for ax, metric in zip(axes, metrics, strict=True):
        for i, sae_type in enumerate(types):
            means, sds = [], []
            for target in targets:
                values = [
                    r["value"]
                    for r in records
                    if (r["model"], r["layer"]) == target
                    and r["sae_type"] == sae_type
                    and r["metric"] == metric
                ]
                means.append(np.nanmean(values) if values else np.nan)
                sds.append(np.nanstd(values) if len(values) > 1 else 0.0)
            x = np.arange(len(targets)) + (i - (len(types) - 1) / 2) * width
            ax.bar(x, means, width, yerr=sds, color=colour_of(sae_type), label=label_of(sae_type))
        ax.set_xticks(np.arange(len(targets)), [m for m, _ in targets], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(metric.replace("_", " "), fontsize=9)
    axes[0].legend(fontsize=7)
    return fig


def plot_curated(
    rows: Sequence[tuple[str, LatentGallery, Tensor]],
    classes: Sequence[tuple[str, int]],
    n_show: int = 2,
) -> Figure:
    """For each SAE (a row: label, gallery, canonical images) and each factor class (a column),
    the alive latent of best F1 for that class, shown as its ``n_show`` top orbits (poses side by
    side) with its precision, recall and invariance."""
    fig, axes = plt.subplots(
        len(rows),
        len(classes),
        figsize=(
            min(2.3 * len(classes), MAX_WIDTH),
            (0.6 * n_show + 0.3) * len(rows) * min(1.0, MAX_WIDTH / (2.3 * len(classes))) + 0.4,
        ),
        constrained_layout=True,
        squeeze=False,
    )
    for r, (label, gallery, images) in enumerate(rows):
        for c, (factor, cls) in enumerate(classes):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            j = best_latent_for(gallery, factor, cls)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0:
                ax.set_title(class_name(factor, cls), fontsize=9)
            if j is None:
                ax.text(0.5, 0.5, "no latent", ha="center", va="center", fontsize=8)
                continue
            tiles = top_orbit_images(gallery, images, [j], n_show)[0]
            ax.imshow(tiles_to_uint8(tiles))
            p = float(gallery.precision[factor][j, cls])
            rec = float(gallery.recall[factor][j, cls])
            ax.set_xlabel(
                f"#{j} P={p:.2f} R={rec:.2f} inv={float(gallery.invariance[j]):.2f}", fontsize=7
            )
    return fig


def best_latent_for(gallery: LatentGallery, factor: str, cls: int) -> int | None:
    """The alive latent of best F1 for class ``cls`` of ``factor`` (None if none fires on it)."""
    if factor not in gallery.precision or cls >= gallery.precision[factor].shape[1]:
        return None
    p, r = gallery.precision[factor][:, cls], gallery.recall[factor][:, cls]
    f1 = torch.where(gallery.alive, 2 * p * r / (p + r).clamp_min(1e-12), torch.tensor(-1.0))
    j = int(f1.argmax())
    return j if float(f1[j]) > 0 else None


def plot_planted_atoms(features: Tensor, atoms: Tensor, powers: Tensor, title: str = "") -> Figure:
    """True planted features next to the decoder atoms that match them best: for each feature
    ``f_i`` the atom ``w`` and group element ``a`` maximising ``cos(w, rho(a) f_i)``; left the
    features in the matched pose, right the atoms (sign as learned), cosines on the right."""
    feats = features.float()
    variants = torch.einsum("gij,nj->gni", powers.float(), feats)  # (G, n, d)
    a = torch.nn.functional.normalize(atoms.float(), dim=1)
    sims = torch.nn.functional.normalize(variants, dim=2) @ a.T  # (G, n, n_atoms)
    best_pose = sims.max(2).values.argmax(0)  # (n,)
    per_pose = sims[best_pose, torch.arange(feats.shape[0])]  # (n, n_atoms)
    cos, atom = per_pose.max(1)
    shown_feats = variants[best_pose, torch.arange(feats.shape[0])]
    shown_feats = torch.nn.functional.normalize(shown_feats, dim=1)
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 0.25 * feats.shape[0] + 1.2), sharey=True)
    lim = float(max(shown_feats.abs().max(), a[atom].abs().max()))
    for ax, mat, name in zip(
        axes,
        (shown_feats, a[atom]),
        ("true feature (matched pose)", "best decoder atom"),
        strict=True,
    ):
        ax.imshow(mat.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("dimension", fontsize=8)
    axes[0].set_ylabel("feature", fontsize=8)
    for i, value in enumerate(cos.tolist()):
        axes[1].text(mat.shape[1] + 0.5, i, f"{value:.2f}", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------- the page


@dataclass
class GallerySection:
    """One SAE on the page: a title, its gallery, the canonical images of its orbits, and the
    decoded atoms ``(|G| or 1, d_sae, C, H, W)`` when the base model can decode."""

    title: str
    gallery: LatentGallery
    images: Tensor
    atom_images: Tensor | None = None


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in keep.split("-") if part)


def _latent_record(gallery: LatentGallery, j: int, image: str) -> dict[str, Any]:
    factor, cls, precision, recall = gallery.best_match(j)
    dup = int(gallery.duplicate_of[j])
    return {
        "id": j,
        "img": image,
        "freq": round(float(gallery.frequency[j]), 5),
        "inv": round(float(gallery.invariance[j]), 3),
        "sel": round(float(gallery.pose_selectivity[j]), 3),
        "factor": factor,
        "cls": class_name(factor, cls, gallery.group_name),
        "prec": round(precision, 3),
        "rec": round(recall, 3),
        "dup": dup,
        "dupEl": int(gallery.duplicate_element[j]) if dup >= 0 else -1,
        "hist": [int(v) for v in gallery.histogram[j].tolist()],
        "histMax": round(float(gallery.hist_max[j]), 4),
        "topPose": [int(v) for v in gallery.top_pose[j].tolist()],
        "orbitValues": [[round(v, 3) for v in row] for row in gallery.top_orbit_values[j].tolist()],
    }


def write_gallery_page(
    out: str | Path, sections: Sequence[GallerySection], title: str, n_show: int = 3
) -> dict[str, Any]:
    """Write the offline gallery of every alive latent of every section into ``out`` (replaced
    atomically): ``index.html``, ``gallery-data.js``, the static script and style, and
    ``img/<section>/<latent>.webp``. Returns ``{"n_latents", "n_images", "bytes"}``."""
    from PIL import Image

    if not sections:
        raise ValueError("sections must name at least one SAE to show")
    static = static_folder()
    out = Path(out)
    data: dict[str, Any] = {"title": title, "sections": []}
    n_images = 0
    with io.atomic_folder(out) as tmp:
        for name in STATIC_FILES:
            shutil.copyfile(static / name, tmp / name)
        for section in sections:
            gallery = section.gallery
            slug = _slug(section.title)
            folder = tmp / "img" / slug
            folder.mkdir(parents=True)
            alive = torch.nonzero(gallery.alive).flatten().tolist()
            orbits = top_orbit_images(gallery, section.images, alive, n_show) if alive else None
            latents = []
            for i, j in enumerate(alive):  # one image per alive latent
                atoms = None if section.atom_images is None else section.atom_images[:, j]
                array = tiles_to_uint8(latent_tiles(orbits[i], atoms))
                Image.fromarray(array).save(folder / f"{j}.{IMAGE_FORMAT}", **IMAGE_OPTIONS)
                latents.append(_latent_record(gallery, j, f"img/{slug}/{j}.{IMAGE_FORMAT}"))
                n_images += 1
            data["sections"].append(
                {
                    "title": section.title,
                    "slug": slug,
                    "meta": io.to_jsonable(gallery.meta),
                    "group": gallery.group_name,
                    "order": int(gallery.top_orbit_values.shape[2]),
                    "atomsRow": section.atom_images is not None,
                    "nShow": min(n_show, int(gallery.top_orbit.shape[1])),
                    "factors": gallery.factor_names,
                    "latents": latents,
                }
            )
        payload = json.dumps(io.to_jsonable(data), separators=(",", ":"), allow_nan=False)
        (tmp / DATA_FILE).write_text(f"window.GALLERY_DATA = {payload};\n")
        (tmp / "index.html").write_text(_index_html(title))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"n_latents": n_images, "n_images": n_images, "bytes": size}


def _index_html(title: str) -> str:
    safe = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{safe}</title>
<link rel="stylesheet" href="gallery.css">
</head>
<body>
<h1>{safe}</h1>
<p class="gallery-help">Each card is one alive latent: its top-activating orbits (rows; columns
are the poses) and, where the base model can decode, what its
decoder atom under each group element adds to the decoded image (last row; grey: no change);
in its table of values along each orbit the
pose of the top value is framed. Filter by the factor class it best matches,
by its invariance, pose selectivity or precision.</p>
<form id="gallery-filter" class="gallery-filter">
<label>SAE <select id="f-section"></select></label>
<label>factor <select id="f-factor"><option value="">any</option></select></label>
<label>min. invariance <input id="f-inv" type="number" min="0" max="1" step="0.05" value="0"></label>
<label>min. pose selectivity <input id="f-sel" type="number" min="0" max="1" step="0.05" value="0"></label>
<label>min. precision <input id="f-prec" type="number" min="0" max="1" step="0.05" value="0"></label>
<label>sort by <select id="f-sort">
<option value="freq">frequency</option><option value="inv">invariance</option>
<option value="sel">pose selectivity</option><option value="prec">precision</option>
</select></label>
<label><input id="f-dup" type="checkbox"> duplicates only</label>
</form>
<p id="gallery-count" class="gallery-count"></p>
<div id="gallery-cards" class="gallery-cards"></div>
<script src="{DATA_FILE}"></script>
<script src="gallery.js"></script>
</body>
</html>
"""


def purity_table_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Long-format rows (SAE type, metric, one ``mean ± sd`` cell per target) of per-seed purity
    records, for :func:`equisae.tables.markdown_table`: narrow enough for the book's column."""
    from equisae.plots.findings import label_of
    from equisae.tables import mean_sd_cell

    targets = sorted({(r["model"], r["layer"]) for r in records})
    types = list(dict.fromkeys(r["sae_type"] for r in records))
    present = {r["metric"] for r in records}
    rows = []
    for sae_type in types:
        for metric in (m for m in PURITY_METRICS if m in present):
            row: dict[str, Any] = {"SAE": label_of(sae_type), "metric": metric.replace("_", " ")}
            for model, layer in targets:
                values = [
                    r["value"]
                    for r in records
                    if (r["model"], r["layer"], r["sae_type"], r["metric"])
                    == (model, layer, sae_type, metric)
                ]
                row[f"{model} / {layer}"] = mean_sd_cell(values) if values else "–"
            rows.append(row)
    return rows


def page_summary(info: Mapping[str, Any]) -> str:
    """One line: how many latents a written page shows and its size in MB."""
    return f"{info['n_latents']} latents, {info['bytes'] / 1e6:.2f} MB"


def main_gallery(
    model: str,
    layer: str,
    sae: str,
    source: str = "shapes",
    path: str | None = None,
    mode: str = "quick",
    seed: int = 0,
    split: str = "test",
    out: str | None = None,
    n_show: int = 3,
) -> Path:
    """``equisae gallery``: the gallery page of a saved SAE on a base model's layer, written to
    ``out`` (default ``results/<mode>/gallery-<model>-<layer>``); returns the page's folder."""
    from equisae.gallery import source_gallery
    from equisae.io import results_dir

    found = source_gallery(model, layer, sae, source, path, mode, seed, split)
    atoms = None
    if found.decodes and found.gallery.atoms.numel():
        from equisae.sae.io import load_sae

        b_dec = load_sae(sae).b_dec.detach()
        atoms = decoded_atoms(found.model, found.gallery, b_dec, found.images)
    title = f"Latents of {Path(sae).name} on {model} / {layer} ({source}, {split} split)"
    folder = Path(out) if out else results_dir(mode) / f"gallery-{model}-{layer}"
    section = GallerySection(title, found.gallery, found.images, atoms)
    info = write_gallery_page(folder, [section], title, n_show)
    print(f"gallery of {page_summary(info)} written to {folder / 'index.html'}")
    return folder

"""The latent gallery: scores on constructed latents with known answers, batching against a
reference loop, the cache, the HTML page and the ``equisae gallery`` command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from equisae.gallery import (
    PURITY_METRICS,
    GallerySettings,
    LatentGallery,
    build_gallery,
    decoder_atoms_by_element,
    latent_statistics,
    purity_metrics,
    purity_records,
)
from equisae.groups import get_group

pytestmark = pytest.mark.usefixtures("one_thread")

N, G = 60, 4


def constructed() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Five latents with known behaviour on N orbits of C4 (N, G, 5):

    0 constant over each orbit (invariant), 1 fires only at pose 0 (pose indicator), 2 is
    latent 1 moved by a quarter turn (a duplicate across poses), 3 fires exactly on shape 1 at
    every pose, 4 never fires (dead)."""
    gen = torch.Generator().manual_seed(0)
    amp = torch.rand(N, generator=gen) + 0.5
    shape = torch.arange(N) % 3
    z = torch.zeros(N, G, 5)
    z[:, :, 0] = amp[:, None]
    z[:, 0, 1] = amp
    z[:, 1, 2] = amp
    z[:, :, 3] = (shape == 1).float()[:, None] * amp[:, None]
    return z, {"shape": shape[:, None].expand(N, G).clone()}


def test_scores_of_constructed_latents() -> None:
    z, factors = constructed()
    gal = latent_statistics(z, factors, "C4", GallerySettings(n_top=5))
    assert gal.invariance[0] == pytest.approx(1.0)
    assert gal.invariance[3] == pytest.approx(1.0)
    assert gal.invariance[1] == pytest.approx(0.0, abs=1e-6)
    assert gal.pose_selectivity[1] == pytest.approx(1.0)
    assert gal.pose_selectivity[0] == pytest.approx(0.0, abs=1e-6)
    assert torch.isnan(gal.invariance[4]) and not bool(gal.alive[4])
    # the pose indicator is matched to pose 0, the shape latent to shape 1, both exactly
    assert gal.best_match(1)[:2] == ("pose", 0) and gal.best_match(1)[2:] == (1.0, 1.0)
    assert gal.best_match(3)[:2] == ("shape", 1) and gal.best_match(3)[2:] == (1.0, 1.0)
    assert gal.frequency[1] == pytest.approx(1 / G)
    assert gal.frequency[3] == pytest.approx(float((factors["shape"] == 1).float().mean()))
    # top orbits: the largest amplitudes, at the pose where the indicator fires
    assert set(gal.top_orbit[1].tolist()) == set(z[:, 0, 1].topk(5).indices.tolist())
    assert gal.top_pose[1].tolist() == [0] * 5 and gal.top_pose[2].tolist() == [1] * 5
    assert torch.equal(gal.top_orbit_values[2], z[gal.top_orbit[2], :, 2])


def test_planted_duplicate_across_poses_is_detected() -> None:
    z, factors = constructed()
    gal = latent_statistics(z, factors, "C4")
    assert int(gal.duplicate_of[1]) == 2 and int(gal.duplicate_of[2]) == 1
    # latent 2 fires at pose g_r g_p where latent 1 fires at g_p for r = 1 (the quarter turn)
    assert int(gal.duplicate_element[2]) == 3 and int(gal.duplicate_element[1]) == 1
    # invariant latents are not duplicates across poses of each other or of the indicator
    assert gal.duplicate_of[[0, 3, 4]].tolist() == [-1, -1, -1]
    metrics = purity_metrics(gal)
    assert metrics["n_alive"] == 4
    assert metrics["duplicate_fraction"] == pytest.approx(2 / 4)
    assert metrics["invariant_fraction"] == pytest.approx(2 / 4)
    assert metrics["pose_selective_fraction"] == pytest.approx(2 / 4)
    assert metrics["latents_per_factor"]["pose"] == 2


def test_identical_latents_are_not_pose_duplicates() -> None:
    z, factors = constructed()
    z = torch.cat([z, z[:, :, 1:2]], dim=2)  # latent 5 = latent 1 at the same pose
    gal = latent_statistics(z, factors, "C4")
    assert int(gal.duplicate_of[5]) in (-1, 2)
    assert int(gal.duplicate_of[5]) != 1


def reference_statistics(z: torch.Tensor, labels: torch.Tensor, n_top: int, bins: int):
    """The same numbers with plain Python loops over latents, orbits and poses."""
    n, order, d = z.shape
    out = {"freq": [], "hist": [], "top": [], "inv": [], "prec": [], "rec": []}
    classes = int(labels.max()) + 1
    for j in range(d):
        values = [float(z[i, p, j]) for i in range(n) for p in range(order)]
        fired = [v != 0 for v in values]
        out["freq"].append(sum(fired) / len(values))
        top = max(abs(v) for v in values)
        hist = [0] * bins
        for v in values:
            if v != 0:
                hist[min(int(abs(v) / top * bins), bins - 1)] += 1
        out["hist"].append(hist)
        peaks = sorted(range(n), key=lambda i: -max(float(z[i, p, j]) for p in range(order)))
        out["top"].append(set(peaks[:n_top]))
        spread = sumsq = 0.0
        for i in range(n):
            mean = sum(float(z[i, p, j]) for p in range(order)) / order
            for p in range(order):
                spread += (float(z[i, p, j]) - mean) ** 2
                sumsq += float(z[i, p, j]) ** 2
        out["inv"].append(1 - spread / sumsq / (1 - 1 / order) if sumsq else float("nan"))
        prec, rec = [], []
        for c in range(classes):
            hits = sum(
                1 for i in range(n) for p in range(order) if z[i, p, j] != 0 and labels[i, p] == c
            )
            size = sum(1 for i in range(n) for p in range(order) if labels[i, p] == c)
            prec.append(hits / max(sum(fired), 1))
            rec.append(hits / max(size, 1))
        out["prec"].append(prec)
        out["rec"].append(rec)
    return out


def test_batched_statistics_equal_a_reference_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    n, d = 12, 6
    z = torch.relu(torch.randn(n, G, d, generator=gen) - 0.3)
    labels = torch.randint(3, (n, G), generator=gen)
    gal = latent_statistics(
        z, {"colour": labels}, "C4", GallerySettings(n_top=4, n_bins=5, factors=("colour",))
    )
    ref = reference_statistics(z, labels, 4, 5)
    assert gal.frequency.tolist() == pytest.approx(ref["freq"])
    assert gal.histogram.tolist() == ref["hist"]
    assert [set(row) for row in gal.top_orbit.tolist()] == ref["top"]
    assert gal.invariance.tolist() == pytest.approx(ref["inv"], abs=1e-5)
    assert torch.allclose(gal.precision["colour"], torch.tensor(ref["prec"]), atol=1e-6)
    assert torch.allclose(gal.recall["colour"], torch.tensor(ref["rec"]), atol=1e-6)


class Orbits:
    """A stand-in for ``OrbitActivations`` (acts, factors, group and names)."""

    def __init__(self, acts: torch.Tensor, factors: dict[str, torch.Tensor]) -> None:
        self.acts, self.factors = acts, factors
        self.group_name, self.model_name, self.layer = "C4", "toy", "bottleneck"


def test_build_gallery_does_not_depend_on_the_batch_size() -> None:
    from equisae.sae.factory import build_sae

    gen = torch.Generator().manual_seed(2)
    acts = torch.randn(40, G, 8, generator=gen)
    orbits = Orbits(acts, {"shape": torch.randint(3, (40, G), generator=gen)})
    sae = build_sae("topk", 8, 16, 3, seed=0)
    a = build_gallery(sae, orbits, GallerySettings(batch_size=7))
    b = build_gallery(sae, orbits, GallerySettings(batch_size=1024))
    assert torch.equal(a.frequency, b.frequency) and torch.equal(a.top_orbit, b.top_orbit)
    assert a.atoms.shape == (1, 16, 8)
    with pytest.raises(ValueError, match="d_in=5 but .* dimension 8"):
        build_gallery(build_sae("topk", 5, 10, 2), orbits)


def test_decoder_atoms_move_with_the_representation() -> None:
    from equisae.sae.factory import build_sae

    group = get_group("C4")
    d = 4
    rot = torch.tensor([[0.0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, -1]])
    sae = build_sae("equivariant", d, 6, 2, seed=0, group=group, M=rot)
    atoms = decoder_atoms_by_element(sae)
    assert atoms.shape == (4, 6, d)
    w = sae.W_dec.detach()
    for p in range(4):
        assert torch.allclose(atoms[p], w @ torch.linalg.matrix_power(rot, p).T, atol=1e-5)
    topk = build_sae("topk", d, 6, 2)
    rho = sae.representation().detach()
    given = decoder_atoms_by_element(topk, rho)
    assert given.shape == (4, 6, d)
    assert torch.allclose(given[3], topk.W_dec.detach() @ rho[3].T, atol=1e-5)
    assert decoder_atoms_by_element(topk).shape == (1, 6, d)
    with pytest.raises(ValueError, match="rho must have shape"):
        decoder_atoms_by_element(topk, torch.eye(3)[None])


def test_save_load_round_trip_and_a_damaged_cache(tmp_path: Path) -> None:
    z, factors = constructed()
    gal = latent_statistics(z, factors, "C4", meta={"model": "m", "sae_type": "topk"})
    gal.save(tmp_path / "g")
    back = LatentGallery.load(tmp_path / "g")
    assert back.factor_names == gal.factor_names and back.meta == gal.meta
    assert torch.equal(back.duplicate_of, gal.duplicate_of)
    assert torch.equal(back.precision["shape"], gal.precision["shape"])
    assert purity_metrics(back) == purity_metrics(gal)
    with (tmp_path / "g" / "gallery.safetensors").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="checksum"):
        LatentGallery.load(tmp_path / "g")
    with pytest.raises(FileNotFoundError):
        LatentGallery.load(tmp_path / "missing")


def test_purity_records_are_flat_and_per_seed() -> None:
    z, factors = constructed()
    galleries = []
    for seed in (0, 1):
        meta = {"model": "m", "layer": "bottleneck", "sae_type": "topk", "seed": seed}
        galleries.append(latent_statistics(z, factors, "C4", meta=meta))
    rows = purity_records(galleries)
    assert {tuple(sorted(r)) for r in rows} == {
        ("layer", "metric", "model", "sae_type", "seed", "value")
    }
    metrics = {r["metric"] for r in rows}
    assert set(PURITY_METRICS) <= metrics and "latents_per_factor/shape" in metrics
    assert {r["seed"] for r in rows} == {0, 1}


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="n_top"):
        GallerySettings(n_top=0)
    with pytest.raises(ValueError, match="precision_threshold"):
        GallerySettings(precision_threshold=1.5)
    with pytest.raises(ValueError, match="order 4"):
        latent_statistics(torch.zeros(3, 2, 4), {}, "C4")


def write_page(tmp_path: Path) -> tuple[Path, LatentGallery, dict]:
    from equisae.plots.gallery import GallerySection, write_gallery_page

    z, factors = constructed()
    gal = latent_statistics(z, factors, "C4", meta={"model": "m", "sae_type": "topk"})
    images = torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    atoms = torch.rand(G, 5, 3, 8, 8)
    sections = [
        GallerySection("TopK on m", gal, images, atoms),
        GallerySection("TopK again", gal, images, None),
    ]
    info = write_gallery_page(tmp_path / "page", sections, "Test gallery", n_show=2)
    return tmp_path / "page", gal, info


def test_page_shows_every_alive_latent_with_its_image(tmp_path: Path) -> None:
    page, gal, info = write_page(tmp_path)
    alive = torch.nonzero(gal.alive).flatten().tolist()
    assert info["n_latents"] == 2 * len(alive)
    text = (page / "gallery-data.js").read_text()
    data = read_json_payload(text)
    for section in data["sections"]:
        assert sorted(latent["id"] for latent in section["latents"]) == alive
        for latent in section["latents"]:
            assert (page / latent["img"]).is_file()
    html = (page / "index.html").read_text()
    for src in re.findall(r'src="([^"]+)"', html) + re.findall(r'href="([^"]+)"', html):
        assert (page / src).is_file(), src
        assert "//" not in src


def read_json_payload(text: str) -> dict:
    import json

    prefix = "window.GALLERY_DATA = "
    assert text.startswith(prefix)
    return json.loads(text[len(prefix) :].rstrip().rstrip(";"))


def test_page_tiles_show_the_top_orbits_and_atoms(tmp_path: Path) -> None:
    from equisae.plots.gallery import latent_tiles, tiles_to_uint8, top_orbit_images

    z, factors = constructed()
    gal = latent_statistics(z, factors, "C4")
    images = torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    orbits = top_orbit_images(gal, images, [1, 3], n_show=2)
    assert orbits.shape == (2, 2, G, 3, 8, 8)
    first = int(gal.top_orbit[1, 0])
    assert torch.equal(orbits[0, 0, 1], torch.rot90(images[first], 1, dims=(-2, -1)))
    tiles = latent_tiles(orbits[0], torch.rand(1, 3, 8, 8))
    assert tiles.shape == (3, G, 3, 8, 8)
    array = tiles_to_uint8(tiles)
    assert array.shape == (3 * 9 - 1, G * 9 - 1, 3) and array.dtype.name == "uint8"
    tile = (tiles[1, 2].permute(1, 2, 0) * 255).round().numpy()
    assert (array[9:17, 18:26] == tile).all()  # row 1, column 2 after 1-pixel gaps
    assert (array[8, :] == 128).all() and (array[:, 17] == 128).all()  # the grey gaps
    with pytest.raises(ValueError, match="images must have shape"):
        top_orbit_images(gal, images[:5], [1])


@pytest.mark.slow
def test_gallery_command_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from equisae.cli import main
    from equisae.models import build_model
    from equisae.sae.factory import build_sae
    from equisae.sae.io import save_sae

    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path / "artifacts"))
    model = build_model("mlp_augmented")
    d = int(model.encode(torch.zeros(1, 3, 32, 32)).shape[-1])
    save_sae(build_sae("topk", d, 2 * d, 4, seed=0), tmp_path / "sae")
    out = tmp_path / "page"
    args = ["gallery", "--model", "mlp_augmented", "--sae", str(tmp_path / "sae")]
    assert main([*args, "--mode", "quick", "--out", str(out)]) == 0
    data = read_json_payload((out / "gallery-data.js").read_text())
    (section,) = data["sections"]
    assert section["latents"] and section["atomsRow"]
    assert all((out / latent["img"]).is_file() for latent in section["latents"])
    assert {latent["factor"] for latent in section["latents"]} <= set(section["factors"])
    shutil.rmtree(out)
    assert main(["gallery", "--model", "mlp_augmented", "--sae", str(tmp_path / "no")]) == 1


BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--window-size=1280,1600",
    # no network at all: the page must work from its own files
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
)


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium via selenium (skipped when either is missing)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("headless Chromium not found: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


_CARDS = """
return Array.from(document.querySelectorAll('.gallery-card')).map(c => ({
  latent: Number(c.dataset.latent), factor: c.dataset.factor,
  loaded: c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0}));
"""


@pytest.mark.slow
def test_page_filter_works_offline_in_chromium(tmp_path: Path, chromium) -> None:
    page, gal, _ = write_page(tmp_path)
    chromium.get((page / "index.html").as_uri())
    cards = chromium.execute_script(_CARDS)
    alive = torch.nonzero(gal.alive).flatten().tolist()
    assert sorted(c["latent"] for c in cards) == alive
    assert all(c["loaded"] for c in cards), cards
    # filter by factor: only the pose-matched latents (the indicator and its duplicate)
    chromium.execute_script(
        "const s = document.getElementById('f-factor'); s.value = 'pose';"
        "s.dispatchEvent(new Event('change'));"
    )
    shown = chromium.execute_script(_CARDS)
    pose = [j for j in alive if gal.best_match(j)[0] == "pose"]
    assert sorted(c["latent"] for c in shown) == pose and pose
    # and by score: invariance >= 0.9 among any factor
    chromium.execute_script(
        "const s = document.getElementById('f-factor'); s.value = '';"
        "s.dispatchEvent(new Event('change'));"
        "const i = document.getElementById('f-inv'); i.value = '0.9';"
        "i.dispatchEvent(new Event('input'));"
    )
    invariant = [j for j in alive if float(gal.invariance[j]) >= 0.9]
    assert sorted(c["latent"] for c in chromium.execute_script(_CARDS)) == invariant
    count = chromium.find_element("id", "gallery-count").text
    assert count.startswith(f"{len(invariant)} of {len(alive)}")


def test_decoded_atoms_read_the_code_shape_of_the_base_model() -> None:
    from equisae.models import build_model
    from equisae.plots.gallery import decoded_atoms

    model = build_model("cnn_augmented")
    images = torch.rand(2, 3, 32, 32)
    d = int(model.encode(images[:1]).reshape(1, -1).shape[1])
    z, factors = constructed()
    atoms = torch.randn(G, z.shape[2], d)
    gal = latent_statistics(z, factors, "C4", atoms=atoms)
    out = decoded_atoms(model, gal, torch.zeros(d), images)
    assert out.shape == (G, z.shape[2], 3, 32, 32)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    code = model.encode(images[:1]).shape[1:]
    base = model.decode(torch.zeros(1, *code))
    delta = torch.stack(
        [
            model.decode((gal.top_value[0].mean() * atoms[g, 0]).reshape(1, *code)) - base
            for g in range(G)
        ]
    )
    expected = 0.5 + delta[2, 0] / (2 * delta.abs().max())
    assert torch.allclose(out[2, 0], expected, atol=1e-5)
    assert not bool(gal.alive[4]) and float(out[:, 4].abs().max()) == 0.0


def test_weighted_invariance_matches_the_evaluation_metric() -> None:
    from equisae.sae.evaluate import latent_equivariance_error

    gen = torch.Generator().manual_seed(5)
    z = torch.relu(torch.randn(30, G, 7, generator=gen))
    z[:, :, 0] = 3.0  # a strong invariant latent next to weak, pose-dependent ones
    gal = latent_statistics(z, {}, "C4")
    metrics = purity_metrics(gal)
    expected = 1 - latent_equivariance_error(z) / (1 - 1 / G)
    assert metrics["weighted_invariance"] == pytest.approx(expected, rel=1e-5)
    assert metrics["weighted_invariance"] > metrics["mean_invariance"]


def test_planted_atoms_figure_matches_features_up_to_the_group() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from equisae.planted import ToyConfig, make_planted
    from equisae.plots.gallery import plot_planted_atoms

    problem = make_planted(ToyConfig(d=8, n_features=4), 50, 20, seed=0)
    powers = problem.powers()
    atoms = torch.cat([problem.features @ powers[1].T, torch.randn(3, 8)])  # moved + noise atoms
    fig = plot_planted_atoms(problem.features, atoms, powers)
    cosines = [float(t.get_text()) for t in fig.axes[1].texts]
    assert cosines == pytest.approx([1.0] * 4, abs=0.01)


def test_purity_figure_shows_the_seed_means() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from equisae.plots.gallery import plot_purity, purity_table_rows

    rows = [
        {"model": "m", "layer": "bottleneck", "sae_type": t, "seed": s, "metric": k, "value": v}
        for t, base in (("topk", 0.2), ("adaptive", 0.6))
        for s in (0, 1)
        for k, v in (("invariant_fraction", base + 0.1 * s), ("duplicate_fraction", 0.5))
    ]
    fig = plot_purity(rows, ("invariant_fraction", "duplicate_fraction"), ("topk", "adaptive"))
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0.25, 0.65])
    table = purity_table_rows(rows)
    assert [(r["SAE"], r["metric"]) for r in table] == [
        ("TopK", "invariant fraction"),
        ("TopK", "duplicate fraction"),
        ("adaptive equivariant", "invariant fraction"),
        ("adaptive equivariant", "duplicate fraction"),
    ]
    assert table[0]["m / bottleneck"].startswith("0.25")
    assert table[2]["m / bottleneck"].startswith("0.65")


def test_book_build_finds_the_gallery_of_the_build_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "book" / "_ext" / "equisae_book.py"
    spec = importlib.util.spec_from_file_location("equisae_book_gallery", path)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    monkeypatch.delenv("EQUISAE_RESULTS", raising=False)
    assert ext.gallery_source(tmp_path) is None
    for mode in ("quick", "full"):
        (tmp_path / "results" / mode / "gallery").mkdir(parents=True)
        (tmp_path / "results" / mode / "gallery" / "index.html").write_text("<html></html>")
    info = tmp_path / "book" / "notebooks" / "build_info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"mode": "quick"}))
    assert ext.gallery_source(tmp_path) == tmp_path / "results" / "quick" / "gallery"
    info.write_text(json.dumps({"mode": "full"}))
    assert ext.gallery_source(tmp_path) == tmp_path / "results" / "full" / "gallery"

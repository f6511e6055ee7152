"""The linear-representation fit: planted representations are recovered, exact equivariance
gives R^2 = 1, and bad input is refused."""

from __future__ import annotations

import json

import pytest
import torch

from equisae.activations import OrbitActivations, orbit_activations_many
from equisae.groups import (
    get_group,
    group_error,
    irrep_generators,
    irrep_multiplicities,
    matrix_powers,
    relation_errors,
    representation_from_irreps,
    representation_matrices,
)
from equisae.linrep import (
    analyse_linear_representation,
    fit_linear_representation,
    irrep_names,
    orthogonality_error,
    r2_score,
    root_of_unity_distance,
)

PLANTED = {"trivial": 2, "sign": 1, "rotation_1": 3}


#: one torch thread per test (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def representation_from_multiplicities(mult: dict[str, int], n: int, seed: int) -> torch.Tensor:
    """The generator R of a planted C_n representation (float64)."""
    return representation_from_irreps(n, mult, seed)[0]["r"]


def planted_orbits(rep: torch.Tensor, n_examples: int, noise: float, seed: int) -> torch.Tensor:
    """h_p = R^p h_0 + mu + noise, with h_0 Gaussian of unequal scales; shape (N, n, d)."""
    gen = torch.Generator().manual_seed(seed)
    d = rep.shape[0]
    scales = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    h0 = torch.randn(n_examples, d, generator=gen, dtype=torch.float64) * scales
    poses = [h0 @ torch.linalg.matrix_power(rep, p).T for p in range(4)]
    h = torch.stack(poses, dim=1) + 1.5
    return (h + noise * torch.randn(h.shape, generator=gen, dtype=torch.float64)).float()


def splits(rep: torch.Tensor, noise: float, n_train: int = 400) -> list[torch.Tensor]:
    return [planted_orbits(rep, n, noise, seed) for n, seed in ((n_train, 0), (200, 1), (200, 2))]


def test_irreps_and_planted_representation_are_group_representations() -> None:
    assert irrep_names(4) == ["trivial", "sign", "rotation_1"]
    assert irrep_names(6) == ["trivial", "sign", "rotation_1", "rotation_2"]
    assert irrep_names(3) == ["trivial", "rotation_1"]
    rep = representation_from_multiplicities(PLANTED, 4, seed=3)
    assert rep.shape == (9, 9)
    assert group_error(4, rep) < 1e-12
    assert group_error(2, rep) > 0.5  # rotation blocks have order 4, not 2
    assert orthogonality_error(rep) < 1e-12
    raw = irrep_multiplicities(4, matrix_powers(rep, 4))
    for name, mult in PLANTED.items():
        assert raw[name] == pytest.approx(mult, abs=1e-10)
    assert root_of_unity_distance(torch.linalg.eigvals(rep), 4).max() < 1e-10
    with pytest.raises(KeyError, match="rotation_2"):
        irrep_generators(4, "rotation_2")
    with pytest.raises(ValueError, match="group order"):
        irrep_names(0)


@pytest.mark.parametrize(
    "planted", [PLANTED, {"rotation_1": 4}, {"trivial": 3, "sign": 3}, {"sign": 1, "rotation_1": 1}]
)
def test_recovers_planted_representation_and_multiplicities(planted: dict[str, int]) -> None:
    rep = representation_from_multiplicities(planted, 4, seed=7)
    train, val, test = splits(rep, noise=0.02)
    fit, result = analyse_linear_representation(train, val, test)
    assert torch.linalg.matrix_norm(fit.M - rep) / torch.linalg.matrix_norm(rep) < 0.02
    expected = {name: planted.get(name, 0) for name in irrep_names(4)}
    assert result.irrep_multiplicities == expected
    assert result.rank == rep.shape[0]
    assert min(result.r2_single) > 0.99
    assert result.group_error < 0.02


def test_recovery_error_shrinks_with_noise_and_is_exact_without() -> None:
    rep = representation_from_multiplicities(PLANTED, 4, seed=1)
    errors, group_errors = [], []
    for noise in (0.0, 0.01, 0.1, 0.3):
        fit, result = analyse_linear_representation(*splits(rep, noise))
        errors.append(float(torch.linalg.matrix_norm(fit.M - rep) / torch.linalg.matrix_norm(rep)))
        group_errors.append(result.group_error)
    assert errors == sorted(errors) and group_errors == sorted(group_errors)
    assert errors[0] < 1e-5 and group_errors[0] < 1e-5
    assert errors[-1] > 10 * errors[1]


def test_r2_references_identity_and_per_power() -> None:
    rep = representation_from_multiplicities(PLANTED, 4, seed=2)
    _, result = analyse_linear_representation(*splits(rep, noise=0.3))
    assert result.r2_identity[0] == pytest.approx(1.0)
    assert max(result.r2_identity[1:]) < 0.5  # rotation changes these activations a lot
    for p in range(4):
        # The per-power map is the best linear map: never much worse than M^p.
        assert result.r2_per_power[p] >= result.r2_single[p] - 0.01
        if p > 0:
            assert result.r2_single[p] > result.r2_identity[p]
    assert result.power_consistency[1] < 0.2


def test_non_representation_is_flagged() -> None:
    """Activations that are not related by any fixed linear map: the fit says so."""
    gen = torch.Generator().manual_seed(5)
    orbits = [torch.randn(n, 4, 6, generator=gen) for n in (300, 150, 150)]
    _, result = analyse_linear_representation(*orbits)
    assert max(result.r2_single[1:]) < 0.1
    assert result.group_error > 0.5
    assert result.root_distance_max > 0.5


def test_dead_units_are_dropped_and_group_law_stays_exact() -> None:
    rep = representation_from_multiplicities(PLANTED, 4, seed=4)
    padded = []
    for orbit in splits(rep, noise=0.0):
        dead = torch.full((orbit.shape[0], 4, 3), 0.25)
        padded.append(torch.cat([orbit, dead], dim=2))
    fit, result = analyse_linear_representation(*padded)
    assert (result.dim, result.rank) == (12, 9)
    assert result.group_error < 1e-5
    assert result.explained_variance == pytest.approx(1.0)
    assert fit.predict(padded[2][:, 0], 2).shape == (200, 12)


def test_random_init_gcnn_is_exactly_equivariant() -> None:
    """A random-init p4 G-CNN: h(g x) is a permutation of h(x), at both hooked layers."""
    from equisae.groups import get_group
    from equisae.models import LAYERS, build_model

    torch.manual_seed(0)
    model = build_model("gcnn", image_size=16)  # 16x16 keeps the test fast; same layers
    group = get_group("C4")
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(400, 3, 16, 16, generator=gen)
    orbit = torch.stack([group.act_images(images, p) for p in range(4)], dim=1)
    layers = list(LAYERS["gcnn"].values())
    data = {"images": orbit, "factors": {}}
    acts = orbit_activations_many(model, type("DS", (), data)(), group, layers, progress=False)
    for layer in layers:
        full = acts[layer].acts
        train, val, test = full[:280], full[280:340], full[340:]
        _, result = analyse_linear_representation(train, val, test)
        assert min(result.r2_single) >= 0.999, (layer, result.r2_single)
        assert result.group_error < 1e-4, (layer, result.group_error)
        assert result.whitened_orthogonality_error < 1e-3
        assert sum(result.irrep_multiplicities.values()) > 0


def test_deterministic_and_json_ready() -> None:
    rep = representation_from_multiplicities(PLANTED, 4, seed=6)
    data = splits(rep, noise=0.1)
    fit_a, res_a = analyse_linear_representation(*data)
    fit_b, res_b = analyse_linear_representation(*data)
    assert torch.equal(fit_a.M, fit_b.M)
    payload = res_a.to_dict()
    assert payload == res_b.to_dict()
    text = json.dumps(payload, allow_nan=False)
    for key in ("r2_single", "r2_identity", "r2_per_power", "group_error", "irrep_multiplicities"):
        assert key in json.loads(text)
    assert len(payload["eigenvalues"]["real"]) == rep.shape[0]


def test_accepts_orbit_activations_and_checks_the_group_order() -> None:
    rep = representation_from_multiplicities(PLANTED, 4, seed=8)
    train, val, _ = splits(rep, noise=0.05)
    store = OrbitActivations(train, {}, "C4", "bottleneck", "planted")
    assert fit_linear_representation(store, val).rank == 9
    with pytest.raises(ValueError, match="D4 has 8 elements, but the activations have 4 poses"):
        fit_linear_representation(OrbitActivations(train, {}, "D4", "b", "m"), val)
    with pytest.raises(ValueError, match="unknown group"):
        fit_linear_representation(train, val, group="SO2")


D4_PLANTED = {"trivial": 1, "flip": 2, "sign": 1, "sign_flip": 1, "rotation_1": 3}


def d4_orbits(gens: dict[str, torch.Tensor], n_examples: int, noise: float, seed: int):
    """h_a = rho(a) h_0 + mu + noise for the 8 elements of D4 in their order: (N, 8, d)."""
    gen = torch.Generator().manual_seed(seed)
    mats = representation_matrices(get_group("D4"), gens)
    d = mats.shape[1]
    scales = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    h0 = torch.randn(n_examples, d, generator=gen, dtype=torch.float64) * scales
    h = torch.einsum("gij,nj->ngi", mats, h0) - 0.7
    return (h + noise * torch.randn(h.shape, generator=gen, dtype=torch.float64)).float()


def test_d4_fit_recovers_both_generators_and_r2_per_element() -> None:
    gens = representation_from_irreps("D4", D4_PLANTED, seed=11)[0]
    data = [d4_orbits(gens, n, 0.0, s) for n, s in ((300, 0), (100, 1), (100, 2))]
    store = OrbitActivations(data[0], {}, "D4", "b", "planted")
    fit, result = analyse_linear_representation(store, data[1], data[2])
    assert fit.group.name == "D4" and result.group_order == 8
    for name, true in (("r", gens["r"]), ("s", gens["s"])):
        found = fit.generators()[name]
        assert torch.linalg.matrix_norm(found - true) / torch.linalg.matrix_norm(true) < 1e-3
    assert len(result.r2_single) == 8 and min(result.r2_single) > 0.9999
    assert min(result.r2_per_power) > 0.9999
    assert max(result.r2_identity[1:]) < 0.5  # every non-identity element moves activations
    assert result.group_error < 1e-5
    assert max(result.extra["relation_errors"].values()) < 1e-5
    assert result.extra["relation_error_max_abs"] < 1e-5
    assert result.irrep_multiplicities == {k: D4_PLANTED.get(k, 0) for k in irrep_names("D4")}
    assert result.root_distance_max < 1e-5  # M has order 4: eigenvalues are 4th roots of 1
    # Predicting the flip by rho(s) equals predicting with the fitted S.
    h0 = data[2][:, 0]
    expected = fit.mean + (h0.double() - fit.mean) @ fit.S.T
    assert torch.allclose(fit.predict(h0, 4), expected, atol=1e-8)


def test_d4_fit_of_a_c8_representation_breaks_the_relations() -> None:
    """Activations that transform under C8 read as a D4 orbit: the relations fail loudly."""
    rot = representation_from_multiplicities({"rotation_1": 2, "rotation_3": 1}, 8, seed=3)
    h0 = torch.randn(300, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    acts = torch.stack([h0 @ torch.linalg.matrix_power(rot, p).T for p in range(8)], 1).float()
    _, result = analyse_linear_representation(acts[:150], acts[150:220], acts[220:], group="D4")
    assert result.group_error > 0.3
    assert max(result.extra["relation_errors"].values()) == pytest.approx(result.group_error)
    # The same orbits as C8 are an exact representation.
    _, as_c8 = analyse_linear_representation(acts[:150], acts[150:220], acts[220:])
    assert as_c8.group_error < 1e-5 and "relation_errors" not in as_c8.extra
    assert relation_errors("C8", rot) == {"r^8": pytest.approx(0.0, abs=1e-12)}


def test_bad_input_raises_clear_errors() -> None:
    rep = representation_from_multiplicities(PLANTED, 4, seed=9)
    train, val, test = splits(rep, noise=0.05)
    with pytest.raises(ValueError, match="share"):
        fit_linear_representation(train, val[:, :, :5])
    with pytest.raises(ValueError, match=r"shape \(N, n, d\)"):
        fit_linear_representation(train[:, 0], val)
    with pytest.raises(ValueError, match="too few training examples"):
        fit_linear_representation(train[:6], val)
    bad = train.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_representation(bad, val)
    fit = fit_linear_representation(train, val)
    from equisae.linrep import evaluate_linear_representation

    with pytest.raises(ValueError, match="test activations"):
        evaluate_linear_representation(fit, test[:, :3])
    with pytest.raises(ValueError, match="ridge_grid"):
        fit_linear_representation(train, val, ridge_grid=[-1.0])
    with pytest.raises(ValueError, match="same shape|shape \\(N, d\\)"):
        r2_score(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="zero variance"):
        r2_score(torch.zeros(3, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="square"):
        group_error(4, torch.zeros(2, 3))


def test_sae_generators_give_full_rank_d4_generators_and_sae_representation_stays_c_n() -> None:
    from equisae.linrep import sae_generators, sae_representation

    gens = representation_from_irreps("D4", D4_PLANTED, seed=11)[0]
    data = [d4_orbits(gens, n, 0.0, s) for n, s in ((300, 0), (100, 1), (100, 2))]
    store = OrbitActivations(data[0], {}, "D4", "b", "planted")
    fit, full = sae_generators(store, data[1])
    assert set(full) == {"r", "s"} and fit.group.name == "D4"
    d = gens["r"].shape[0]
    for name, true in gens.items():
        assert full[name].shape == (d, d) and full[name].dtype == torch.float32
        assert torch.linalg.matrix_norm(full[name].double() - true) / d**0.5 < 1e-3
    assert max(relation_errors(get_group("D4"), full).values()) < 1e-3
    # The same tensor without a group name is read as C8 by default; the name "D4" is needed.
    _, plain = sae_generators(data[0], data[1], group="D4")
    assert torch.allclose(plain["s"], full["s"])
    with pytest.raises(ValueError, match="sae_generators"):
        sae_representation(store, data[1])


def test_compare_generators_weighs_away_directions_the_orbits_do_not_use() -> None:
    from equisae.linrep import compare_generators, orbit_prediction_fvu

    gen = torch.Generator().manual_seed(0)
    d, used = 6, 4
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # a quarter turn: rot^4 = I
    true = torch.block_diag(rot, rot, torch.eye(d - used))
    h0 = torch.zeros(300, d)
    h0[:, :used] = torch.randn(300, used, generator=gen)
    orbits = torch.stack([h0 @ torch.linalg.matrix_power(true, p).T for p in range(4)], 1)
    exact = compare_generators(orbits, true, true)
    assert exact["distance"] == exact["group_error"] == 0.0
    assert exact["prediction_fvu"] == pytest.approx(0.0, abs=1e-12)
    assert exact["prediction_fvu_identity"] > 1.0  # the poses differ: I predicts them badly
    drifted = true.clone()
    drifted[used:, used:] = 3.0 * torch.eye(d - used)  # moves only where the orbits are zero
    report = compare_generators(orbits, drifted, true)
    assert report["distance"] > 0.5 and report["group_error"] > 1.0
    assert report["distance_weighted"] == pytest.approx(0.0, abs=1e-9)
    assert report["group_error_weighted"] == pytest.approx(0.0, abs=1e-6)
    assert report["prediction_fvu"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\(N, n >= 2, d\)"):
        orbit_prediction_fvu(orbits[:, 0], true)
    with pytest.raises(ValueError, match="generator must be"):
        orbit_prediction_fvu(orbits, torch.eye(3))


def _wide_orbits(n: int, d: int, r: int, seed: int) -> torch.Tensor:
    """C4 orbits (n, 4, d) spanning an r-dim subspace of R^d (a rotation by 90 degrees in
    r/2 planes) plus a small isotropic noise that fills all d dimensions."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))
    rot = torch.kron(torch.eye(r // 2, dtype=torch.float64), torch.tensor([[0.0, -1], [1, 0]]))
    z = torch.randn(n, r, generator=gen, dtype=torch.float64)
    poses = [z @ torch.linalg.matrix_power(rot, p).T for p in range(4)]
    noise = 1e-3 * torch.randn(n, 4, d, generator=gen, dtype=torch.float64)
    return (torch.stack(poses, 1) @ q.T + noise).float()


def test_sae_representation_caps_wide_layers_and_reports_its_matrix() -> None:
    """On a layer wider than the data can determine, sae_representation takes max_dim (or
    chooses one with a warning), and representation_summary describes the full-rank M."""
    from equisae.linrep import auto_max_dim, representation_summary, sae_representation

    acts = _wide_orbits(120, 300, 8, seed=0)
    train, val = acts[:80], acts[80:]
    with pytest.raises(ValueError, match="max_dim"):
        fit_linear_representation(train, val)  # 300 noisy dimensions, 80 examples
    with pytest.warns(UserWarning, match=r"max_dim=40"):
        assert auto_max_dim(train) == 40
    with pytest.warns(UserWarning, match="max_dim"):
        rep, M = sae_representation(train, val)
    assert rep.rank <= 40
    rep8, M8 = sae_representation(train, val, max_dim=8)
    assert rep8.rank == 8
    summary = representation_summary(rep8, M8)
    assert summary == {
        **summary,
        "dim": 300,
        "rank": 8,
        "dropped": 292,
        "complement": "identity",
    }
    assert summary["explained_variance"] > 0.99
    assert summary["condition_number"] < 1.5  # a rotation, and the identity elsewhere
    assert abs(summary["min_eigenvalue_modulus"] - 1) < 0.05
    assert int(torch.linalg.matrix_rank(M8.double())) == 300
    assert int(torch.linalg.matrix_rank(rep8.M)) == 8  # the fit's own M is singular
    with pytest.raises(ValueError, match=r"M must be \(300, 300\)"):
        representation_summary(rep8, torch.eye(4))
    narrow = _wide_orbits(120, 16, 8, seed=1)
    assert auto_max_dim(narrow[:80]) is None  # nothing to cap: no warning


def test_eigenvalues_are_stored_in_canonical_order() -> None:
    """LAPACK's order depends on the machine: the stored eigenvalues are sorted by angle in
    [0, 2 pi), then by modulus, and are the eigenvalues of the fitted M."""
    import numpy as np

    rep = representation_from_multiplicities(PLANTED, 4, seed=3)
    fit, result = analyse_linear_representation(*splits(rep, noise=0.05))
    eig = result.eigenvalues
    angle = np.round(np.mod(np.angle(eig), 2 * np.pi), 6)
    keys = list(zip(angle, np.abs(eig), strict=True))
    assert keys == sorted(keys)
    expected = torch.linalg.eigvals(fit.M_reduced).numpy()
    assert np.allclose(np.sort_complex(eig), np.sort_complex(expected), atol=1e-5)

"""Tests for equisae.sae.config and the strict factory: seeds reach the initial weights, unknown
hyperparameters raise, configs round-trip through save/load (also cfg.json of older versions)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from equisae.plots.style import VARIANT_STYLE
from equisae.sae.config import (
    AdaptiveEquivariantConfig,
    SAEConfig,
    TopKConfig,
    WideConfig,
)
from equisae.sae.factory import (
    build_sae,
    config_fields,
    sae_class,
    sae_config,
    shared_hyper,
    variant_colour,
    variant_label,
    variants,
)
from equisae.sae.io import CFG_FILENAME, load_sae, save_sae

D_IN, D_SAE, K = 8, 12, 3
VARIANTS = sorted(variants())


def _rep() -> torch.Tensor:
    """A well-conditioned (orthogonal) C4 generator candidate for the fixed-M variants."""
    return torch.linalg.qr(torch.randn(D_IN, D_IN, generator=torch.Generator().manual_seed(9)))[0]


def _build(variant: str, seed: int, **hyper):
    rep = _rep() if sae_class(variant).is_equivariant else None
    return build_sae(variant, D_IN, D_SAE, K, seed=seed, M=rep, **hyper)


def _seeded_tensors(sae) -> dict[str, torch.Tensor]:
    """The randomly initialised tensors (the biases start at zero, M is given, not drawn)."""
    return {"W_dec": sae.W_dec.detach(), "W_enc": sae.W_enc.detach()}


def _old_recipe(seed: int, d_sae: int, d_in: int) -> torch.Tensor:
    """The decoder the code before the config classes drew: unit rows of a float64 normal."""
    w = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (w / w.norm(dim=1, keepdim=True)).float()


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_seeds_give_different_initial_weights_and_one_seed_the_same(variant):
    a, b, a2 = _build(variant, 0), _build(variant, 1), _build(variant, 0)
    assert (a.seed, b.seed) == (0, 1)
    for name, tensor in _seeded_tensors(a).items():
        assert not torch.equal(tensor, _seeded_tensors(b)[name]), name
    state, again = a.state_dict(), a2.state_dict()
    assert state.keys() == again.keys()
    assert all(torch.equal(state[key], again[key]) for key in state)


@pytest.mark.parametrize("variant", VARIANTS)
def test_initial_weights_follow_the_seed_recipe_of_before(variant):
    """Seed s gives the decoder the old code gave seed 0 (the only one it used) when s = 0, so
    seed-0 results are unchanged: unit rows of a float64 normal from Generator(s); W_enc its
    transpose (the crosscoder keeps block 0 of that draw and fills the others from s + 1)."""
    for seed in (0, 4):
        sae = _build(variant, seed)
        expected = _old_recipe(seed, sae.d_sae, D_IN)
        assert torch.equal(sae.W_enc.detach(), expected.T)
        if variant == "crosscoder":  # block 0 is renormalised with the other blocks
            torch.testing.assert_close(sae.W_dec.detach()[:, :D_IN], expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(sae.W_dec.detach(), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_unknown_or_misspelt_hyperparameter_raises_naming_it(variant):
    valid = config_fields(variant)
    with pytest.raises(ValueError, match=r"\['lamda_inv'\].*valid fields: \[.*'seed'"):
        _build(variant, 0, lamda_inv=3.0)
    cls = sae_class(variant)
    with pytest.raises(ValueError, match=r"\['n_latents'\]"):
        cls(D_IN, D_SAE, K, n_latents=4) if "k" in valid else cls(D_IN, D_SAE, n_latents=4)
    # a field of another variant is no field of this one
    for foreign in ("lambda_eq", "l1_coeff", "threshold_momentum", "sparse_training"):
        if foreign not in valid:
            with pytest.raises(ValueError, match=foreign):
                _build(variant, 0, **{foreign: 0.5})


def test_unused_arguments_are_not_config_fields():
    """Fields a class does not use do not exist on its config."""
    assert "sparse_training" in config_fields("topk") and "sparse_training" in config_fields("wide")
    for variant in VARIANTS:
        cls = sae_class(variant)
        if (
            cls.loss is not sae_class("topk").loss
            or cls.activation is not sae_class("topk").activation
        ):
            assert "sparse_training" not in config_fields(variant), (
                variant
            )  # own loss: no sparse path
    assert "lambda_inv" not in config_fields("equivariant_canonical")  # one latent per orbit
    assert "lambda_eq" not in config_fields("equivariant")
    assert "k" not in config_fields("relu")
    assert {"lambda_inv", "lambda_eq", "equivariance_bases"} <= set(config_fields("adaptive"))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="k must be at most d_sae=4"):
        TopKConfig(8, 4, k=5)
    with pytest.raises(ValueError, match="seed must be an integer"):
        TopKConfig(8, 4, k=2, seed=1.5)
    with pytest.raises(ValueError, match="dtype must be one of"):
        SAEConfig(8, 4, dtype="float8")
    with pytest.raises(ValueError, match="lambda_eq must be a number"):
        AdaptiveEquivariantConfig(8, 4, 2, lambda_eq=True)
    with pytest.raises(ValueError, match="equivariance_bases must be one of"):
        AdaptiveEquivariantConfig(8, 4, 2, equivariance_bases="some")
    with pytest.raises(ValueError, match="missing 1 required positional argument: 'k'"):
        TopKConfig.create(8, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TopKConfig(8, 4, k=2).k = 3  # type: ignore[misc]
    assert AdaptiveEquivariantConfig(8, 4, 2, group="D4").equivariance_bases == "all"
    assert WideConfig(8, 4, 2, group_order=8).d_sae == 32


def test_build_sae_takes_a_config_or_its_fields():
    cfg = sae_config("adaptive", D_IN, D_SAE, K, seed=3, group="D4", lambda_eq=2.0)
    sae = build_sae("adaptive", cfg)
    assert sae.cfg is cfg and sae.group.name == "D4" and sae.seed == 3
    assert build_sae("adaptive", D_IN, D_SAE, K, seed=3, group="D4", lambda_eq=2.0).cfg == cfg
    with pytest.raises(ValueError, match=r"takes the config alone.*\['seed'\]"):
        build_sae("adaptive", cfg, seed=1)
    with pytest.raises(ValueError, match="needs a AdaptiveEquivariantConfig, got a TopKConfig"):
        sae_class("adaptive")(TopKConfig(D_IN, D_SAE, K))
    assert build_sae("crosscoder", D_IN, D_SAE, K, group="C6").group_order == 6
    with pytest.raises(ValueError, match=r"\['group_order'\] of SAE variant 'crosscoder'"):
        build_sae("crosscoder", D_IN, D_SAE, K, group_order=6)  # would be overwritten by group
    with pytest.raises(ValueError, match="either a config or its fields"):
        sae_class("topk")(TopKConfig(D_IN, D_SAE, K), seed=2)


def test_shared_hyper_keeps_each_variants_own_fields_and_rejects_misspellings():
    assert shared_hyper("topk", lambda_inv=0.5, lambda_eq=2.0) == {}
    assert shared_hyper("equivariant", lambda_inv=0.5, lambda_eq=2.0) == {"lambda_inv": 0.5}
    assert shared_hyper("adaptive", lambda_inv=0.5, lambda_eq=2.0) == {
        "lambda_inv": 0.5,
        "lambda_eq": 2.0,
    }
    with pytest.raises(ValueError, match=r"\['lambda_eqq'\] is a hyperparameter of no SAE"):
        shared_hyper("adaptive", lambda_eqq=1.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_round_trips_through_save_and_load(variant, tmp_path):
    sae = _build(variant, 5, aux_k=2)
    assert type(sae).from_config(sae.config()).cfg == sae.cfg
    loaded = load_sae(save_sae(sae, tmp_path / variant))
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg and loaded.seed == 5
    for key, tensor in sae.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key


#: what the code before the config classes wrote into cfg.json besides today's fields
#: (checked against folders saved by that code: the keys below, with these values)
LEGACY_EXTRA: dict[str, dict] = {
    "batchtopk": {"sparse_training": True},
    "crosscoder": {"sparse_training": True},
    "equivariant": {"sparse_training": True, "group_order": 4},
    "equivariant_canonical": {"sparse_training": True, "group_order": 4, "lambda_inv": 0.5},
    "adaptive": {"sparse_training": True, "group_order": 4},
    "adaptive_canonical": {"sparse_training": True, "group_order": 4},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_folders_saved_by_the_previous_version_still_load(variant, tmp_path):
    sae = _build(variant, 2)
    folder = save_sae(sae, tmp_path / variant)
    cfg_path = folder / CFG_FILENAME
    cfg = json.loads(cfg_path.read_text())
    cfg.update(LEGACY_EXTRA.get(variant, {}))
    (folder / "manifest.json").unlink(missing_ok=True)  # edited by hand: loaded with trust=True
    cfg_path.write_text(json.dumps(cfg))
    loaded = load_sae(folder, trust=True)
    assert loaded.cfg == sae.cfg
    derived = "d_sae" if variant == "wide" else "group_order"  # values the others determine
    if derived in cfg and derived not in config_fields(variant):
        cfg_path.write_text(json.dumps({**cfg, derived: 99}))
        with pytest.raises(ValueError, match=f"{derived}=99 does not match the other fields"):
            load_sae(folder, trust=True)  # an inconsistent value is not silently dropped
    cfg = {**json.loads(cfg_path.read_text()), "no_such_field": 1}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no_such_field"):
        load_sae(folder, trust=True)


def test_every_variant_has_a_style_and_the_models_have_none():
    assert set(VARIANT_STYLE) == set(VARIANTS)
    for variant in VARIANTS:
        assert variant_label(variant) == VARIANT_STYLE[variant].label
        assert variant_colour(variant) == VARIANT_STYLE[variant].colour
        assert not hasattr(sae_class(variant), "label")
    assert len({style.colour for style in VARIANT_STYLE.values()}) == len(VARIANT_STYLE)
    with pytest.raises(KeyError, match="unknown SAE variant"):
        variant_label("dense")

"""Every size of both modes is where :mod:`equisae.modes` puts it, and unchanged.

The table below is the settings of every mode as they were before the sizes moved into
:mod:`equisae.modes` (commit 46cb040, equal to c0eae18 plus the A/A and base-seeds sweeps
added since): the literal numbers are the point, so that moving a size can never change one
silently. The cache hashes of a few activation keys are pinned the same way.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import pytest

from equisae import data, modes
from equisae.activation_cache import ActivationKey, activation_folder, activation_key
from equisae.io import config_hash
from equisae.models import training_settings
from equisae.sources.pipeline import run_sizes, study_settings
from equisae.sweeps.planted import dihedral_settings, planted_settings
from equisae.sweeps.saes import EVAL_ORBITS
from equisae.sweeps.settings import sweep_settings

TODAY: dict[str, dict[str, Any]] = {
    "quick": {
        "dataset_sizes": {"train": 2000, "val": 500, "test": 500},
        "benchmark_size": 5000,
        "training_settings": {
            "epochs": 2,
            "batch_size": 32,
            "lr": 0.003,
            "weight_decay": 0.0,
            "warmup_fraction": 0.05,
            "eval_batch_size": 512,
        },
        "sweep_settings": {
            "mode": "quick",
            "targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "sae_types": (
                "topk",
                "wide",
                "crosscoder",
                "equivariant",
                "adaptive",
                "equivariant_canonical",
                "adaptive_canonical",
            ),
            "ks": (4, 16),
            "seeds": (0,),
            "probe_k": 4,
            "training": {
                "n_steps": 300,
                "batch_size": 256,
                "lr": 0.004,
                "expansion": 4,
                "max_d_sae": 256,
                "lambda_inv": 1.0,
                "lambda_eq": 1.0,
                "curve_points": 20,
            },
            "probing": {
                "factors": ("shape", "colour", "scale", "quadrant", "orientation", "pose"),
                "probe_ks": (None, 1, 5),
                "c_grid": (0.1, 1.0),
                "max_orbits": (150, 75, 100),
                "max_iter": 100,
                "tol": 0.001,
                "pose_factors": ("quadrant", "orientation"),
                "subsample_seed": 0,
            },
            "intermediate_ks": None,
            "variant_types": (),
            "variant_targets": (),
            "curve_targets": (),
            "reference_seeds": (0,),
            "data_seed": 0,
            "representative": "fixed",
            "setting_targets": (("cnn_augmented", "bottleneck"),),
            "setting_types": ("topk", "equivariant", "adaptive"),
            "lambda_inv_targets": (("cnn_augmented", "bottleneck"),),
            "lambda_inv_values": (0.1, 1.0, 10.0),
            "lambda_inv_types": ("adaptive",),
            "short_steps": 100,
            "length_types": ("topk", "adaptive"),
            "group_targets": (("cnn_augmented", "bottleneck"),),
            "group_types": ("topk", "equivariant", "adaptive"),
            "groups": ("C4", "D4"),
            "convergence_targets": (("cnn_augmented", "bottleneck"),),
            "extended_targets": (("cnn_augmented", "intermediate"),),
            "convergence_factor": 2,
            "convergence_seeds": (0,),
            "aa_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "aa_types": ("topk", "adaptive"),
            "aa_seeds_a": (0, 1),
            "aa_seeds_b": (2, 3),
            "base_seed_targets": (("cnn_augmented", "bottleneck"),),
            "base_seed_types": ("topk", "adaptive"),
            "base_seeds": (0, 1),
        },
        "planted_settings": {
            "mode": "quick",
            "d": 16,
            "feature_counts": (8, 32),
            "seeds": (0, 1),
            "n_train": 1000,
            "n_test": 500,
            "group": "C4",
            "active": 2.0,
            "noise": 0.05,
            "expansion": 2,
            "k": 2,
            "n_steps": 150,
            "batch_size": 128,
            "lr": 0.01,
            "lambda_inv": 1.0,
            "lambda_eq": 10.0,
            "models": (
                "topk",
                "wide",
                "crosscoder",
                "equivariant",
                "adaptive",
                "equivariant_canonical",
                "adaptive_canonical",
            ),
        },
        "dihedral_settings": {
            "mode": "quick",
            "d": 8,
            "feature_counts": (6,),
            "seeds": (0,),
            "n_train": 600,
            "n_test": 300,
            "group": "D4",
            "active": 2.0,
            "noise": 0.05,
            "expansion": 2,
            "k": 2,
            "n_steps": 300,
            "batch_size": 128,
            "lr": 0.01,
            "lambda_inv": 1.0,
            "lambda_eq": 10.0,
            "models": ("topk", "equivariant", "adaptive"),
        },
        "study_settings": {
            "mode": "quick",
            "models": ("cnn_canonical", "cnn_augmented", "gcnn"),
            "sae_types": (
                "topk",
                "wide",
                "crosscoder",
                "equivariant",
                "adaptive",
                "equivariant_canonical",
                "adaptive_canonical",
            ),
            "ks": (4, 8),
            "seeds": (0, 1),
            "probe_k": 8,
            "epochs": 3,
            "batch_size": 32,
            "n_steps": 120,
            "sae_batch_size": 256,
            "max_d_sae": 64,
            "expansion": 1,
            "lambda_inv": 1.0,
            "lambda_eq": 1.0,
            "probe_ks": (None, 1, 5),
            "max_probe_orbits": (60, 30, 60),
            "eval_orbits": 120,
            "c_grid": (1.0,),
            "probe_max_iter": 100,
            "probe_tol": 0.001,
            "references": ("raw", "random"),
        },
        "run_sizes": {
            "epochs": 4,
            "batch_size": 32,
            "sae_steps": 200,
            "sae_batch_size": 256,
            "d_sae": 128,
            "k": 4,
            "probe_ks": (None, 2),
            "max_probe_orbits": 400,
            "lambda_inv": 1.0,
            "lambda_eq": 1.0,
        },
    },
    "full": {
        "dataset_sizes": {"train": 10000, "val": 2000, "test": 2000},
        "benchmark_size": 50000,
        "training_settings": {
            "epochs": 6,
            "batch_size": 32,
            "lr": 0.003,
            "weight_decay": 0.0,
            "warmup_fraction": 0.05,
            "eval_batch_size": 512,
        },
        "sweep_settings": {
            "mode": "full",
            "targets": (
                ("cnn_canonical", "bottleneck"),
                ("cnn_augmented", "bottleneck"),
                ("gcnn", "bottleneck"),
                ("mlp_augmented", "bottleneck"),
                ("vit_augmented", "bottleneck"),
            ),
            "sae_types": (
                "topk",
                "wide",
                "crosscoder",
                "equivariant",
                "adaptive",
                "equivariant_canonical",
                "adaptive_canonical",
            ),
            "ks": (4, 8, 16),
            "seeds": (0, 1, 2),
            "probe_k": 8,
            "training": {
                "n_steps": 4000,
                "batch_size": 256,
                "lr": 0.004,
                "expansion": 4,
                "max_d_sae": 256,
                "lambda_inv": 1.0,
                "lambda_eq": 1.0,
                "curve_points": 40,
            },
            "probing": {
                "factors": ("shape", "colour", "scale", "quadrant", "orientation", "pose"),
                "probe_ks": (None, 1, 2, 5, 16),
                "c_grid": (0.01, 0.1, 1.0),
                "max_orbits": (600, 200, 400),
                "max_iter": 200,
                "tol": 0.001,
                "pose_factors": ("quadrant", "orientation"),
                "subsample_seed": 0,
            },
            "intermediate_ks": (8,),
            "variant_types": ("equivariant_canonical", "adaptive_canonical"),
            "variant_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "curve_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "reference_seeds": (0, 1, 2),
            "data_seed": 0,
            "representative": "fixed",
            "setting_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "setting_types": ("topk", "equivariant", "adaptive"),
            "lambda_inv_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "lambda_inv_values": (0.1, 1.0, 10.0),
            "lambda_inv_types": ("adaptive",),
            "short_steps": 300,
            "length_types": ("topk", "adaptive"),
            "group_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "group_types": ("topk", "equivariant", "adaptive"),
            "groups": ("C4", "D4"),
            "convergence_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "extended_targets": (("cnn_augmented", "intermediate"), ("gcnn", "intermediate")),
            "convergence_factor": 2,
            "convergence_seeds": (0,),
            "aa_targets": (
                ("cnn_canonical", "bottleneck"),
                ("cnn_augmented", "bottleneck"),
                ("gcnn", "bottleneck"),
                ("mlp_augmented", "bottleneck"),
                ("vit_augmented", "bottleneck"),
            ),
            "aa_types": ("topk", "adaptive"),
            "aa_seeds_a": (0, 1, 2),
            "aa_seeds_b": (3, 4, 5),
            "base_seed_targets": (("cnn_augmented", "bottleneck"), ("gcnn", "bottleneck")),
            "base_seed_types": ("topk", "adaptive"),
            "base_seeds": (0, 1, 2),
        },
        "planted_settings": {
            "mode": "full",
            "d": 16,
            "feature_counts": (8, 16, 32, 48, 64),
            "seeds": (0, 1, 2),
            "n_train": 4000,
            "n_test": 1000,
            "group": "C4",
            "active": 2.0,
            "noise": 0.05,
            "expansion": 2,
            "k": 2,
            "n_steps": 800,
            "batch_size": 256,
            "lr": 0.01,
            "lambda_inv": 1.0,
            "lambda_eq": 10.0,
            "models": (
                "topk",
                "wide",
                "crosscoder",
                "equivariant",
                "adaptive",
                "equivariant_canonical",
                "adaptive_canonical",
            ),
        },
        "dihedral_settings": {
            "mode": "full",
            "d": 16,
            "feature_counts": (8, 16),
            "seeds": (0, 1, 2),
            "n_train": 4000,
            "n_test": 1000,
            "group": "D4",
            "active": 2.0,
            "noise": 0.05,
            "expansion": 2,
            "k": 2,
            "n_steps": 800,
            "batch_size": 256,
            "lr": 0.01,
            "lambda_inv": 1.0,
            "lambda_eq": 10.0,
            "models": ("topk", "equivariant", "adaptive"),
        },
        "study_settings": {
            "mode": "full",
            "models": ("cnn_canonical", "cnn_augmented", "gcnn"),
            "sae_types": (
                "topk",
                "wide",
                "crosscoder",
                "equivariant",
                "adaptive",
                "equivariant_canonical",
                "adaptive_canonical",
            ),
            "ks": (4, 8, 16),
            "seeds": (0, 1, 2),
            "probe_k": 8,
            "epochs": 20,
            "batch_size": 32,
            "n_steps": 600,
            "sae_batch_size": 256,
            "max_d_sae": 128,
            "expansion": 2,
            "lambda_inv": 1.0,
            "lambda_eq": 1.0,
            "probe_ks": (None, 1, 5),
            "max_probe_orbits": (240, 80, 240),
            "eval_orbits": 360,
            "c_grid": (0.1, 1.0),
            "probe_max_iter": 200,
            "probe_tol": 0.001,
            "references": ("raw", "random"),
        },
        "run_sizes": {
            "epochs": 20,
            "batch_size": 32,
            "sae_steps": 1000,
            "sae_batch_size": 256,
            "d_sae": 256,
            "k": 8,
            "probe_ks": (None, 1, 5),
            "max_probe_orbits": 400,
            "lambda_inv": 1.0,
            "lambda_eq": 1.0,
        },
    },
}

TODAY_EVAL_ORBITS = 500

#: (model, layer, mode, seed, split, representative, group) -> cache folder name before the key
#: became a value object
TODAY_HASHES = {
    ("gcnn", "bottleneck", "quick", 0, "train", "fixed", "C4"): "e25915de3452f66a",
    ("cnn_augmented", "intermediate", "full", 1, "test", "random", "C4"): "280af64244c35150",
    ("cnn_canonical", "bottleneck", "quick", 2, "val", "fixed", "D4"): "3cd26755afb61f0c",
}


def _same(actual: Any, expected: Any, where: str = "") -> None:
    """Equal values of the same types all the way down (2 is not 2.0, a list is not a tuple)."""
    assert type(actual) is type(expected), f"{where}: {actual!r} is not {expected!r}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            _same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, tuple):
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _accessors(mode: str) -> dict[str, Any]:
    return {
        "dataset_sizes": data.dataset_sizes(mode),
        "benchmark_size": data.benchmark_size(mode),
        "training_settings": asdict(training_settings(mode)),
        "sweep_settings": asdict(sweep_settings(mode)),
        "planted_settings": asdict(planted_settings(mode)),
        "dihedral_settings": asdict(dihedral_settings(mode)),
        "study_settings": asdict(study_settings(mode)),
        "run_sizes": asdict(run_sizes(mode == "quick")),
    }


@pytest.mark.parametrize("mode", modes.MODES)
def test_every_setting_of_a_mode_is_unchanged(mode: str) -> None:
    _same(_accessors(mode), TODAY[mode], mode)
    assert EVAL_ORBITS == modes.EVAL_ORBITS == TODAY_EVAL_ORBITS


@pytest.mark.parametrize("mode", modes.MODES)
def test_every_size_of_a_mode_value_reaches_its_settings(mode: str) -> None:
    """Each field of each size group equals the setting it feeds, so none is left unused."""
    m = modes.get_mode(mode)
    today = TODAY[mode]
    sweep = today["sweep_settings"]
    reads = {
        "data": {**today["dataset_sizes"], "benchmark": today["benchmark_size"]},
        "base_training": today["training_settings"],
        "planted": today["planted_settings"],
        "dihedral": today["dihedral_settings"],
        "study": today["study_settings"],
        "images": today["run_sizes"],
        "sweep": {
            **sweep,
            **{
                k: sweep["training"][k]
                for k in ("n_steps", "batch_size", "max_d_sae", "curve_points")
            },
            **{k: sweep["probing"][k] for k in ("probe_ks", "c_grid", "max_orbits")},
            "probe_max_iter": sweep["probing"]["max_iter"],
        },
    }
    for group, expected in reads.items():
        sizes = getattr(m, group)
        for f in fields(sizes):
            _same(getattr(sizes, f.name), expected[f.name], f"{mode}.{group}.{f.name}")


def test_modes_are_the_two_named_values() -> None:
    assert modes.MODES == ("quick", "full")
    assert [modes.get_mode(m).name for m in modes.MODES] == list(modes.MODES)
    assert modes.get_mode("quick") is modes.QUICK and modes.get_mode("full") is modes.FULL
    with pytest.raises(AttributeError):
        modes.QUICK.data.train = 1  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["fast", "Quick", "", None, 1])
def test_check_mode_names_the_argument_and_the_choices(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"mode must be one of \('quick', 'full'\), got"):
        modes.check_mode(bad)
    with pytest.raises(ValueError, match=r"^--mode must be one of"):
        modes.check_mode(bad, "--mode")
    with pytest.raises(ValueError, match="mode must be one of"):
        modes.get_mode(bad)
    with pytest.raises(ValueError, match="Mode.name"):
        modes.Mode(bad, *(getattr(modes.QUICK, f.name) for f in fields(modes.Mode)[1:]))
    assert modes.check_mode("full") == "full"


@pytest.mark.parametrize(
    "accessor",
    [data.dataset_sizes, training_settings, sweep_settings, planted_settings, study_settings],
)
def test_every_accessor_rejects_an_unknown_mode(accessor) -> None:
    with pytest.raises(ValueError, match=r"mode must be one of \('quick', 'full'\), got 'fast'"):
        accessor("fast")


@pytest.mark.parametrize("parts", list(TODAY_HASHES))
def test_activation_key_hashes_are_unchanged(parts: tuple) -> None:
    key = ActivationKey(*parts)
    assert config_hash(key.config()) == TODAY_HASHES[parts]
    assert key.folder().name == TODAY_HASHES[parts]
    assert activation_key(*parts) == key.config()
    assert activation_folder(*parts) == key.folder()


def test_activation_key_is_one_value() -> None:
    key = ActivationKey("cnn_augmented", "intermediate", "quick")
    assert (key.seed, key.split, key.representative, key.group) == (0, "train", "fixed", "C4")
    # a role and its module name are the same activations
    assert key.folder() == key.at(layer="encoder").folder()
    moved = key.at(split="test")
    assert moved.split == "test" and moved.layer == key.layer and moved != key
    assert key.folder() != moved.folder() != key.at(layer="bottleneck").folder()
    assert len({key, ActivationKey("cnn_augmented", "intermediate", "quick")}) == 1
    with pytest.raises(ValueError, match="mode must be one of"):
        ActivationKey("gcnn", "bottleneck", "fast")
    with pytest.raises(ValueError, match="split must be one of"):
        key.at(split="holdout")
    with pytest.raises(ValueError, match="seed must be an int"):
        ActivationKey("gcnn", "bottleneck", "quick", seed=True)

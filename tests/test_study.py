"""equisae.study and ``equisae images --model module:callable`` on a model equisae has never seen."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from foreign_model import N_DEAD, make, make_images, write_png_folder

import equisae
from equisae.study import StudySizes, load_model

TINY = StudySizes(n_steps=40, batch_size=128, max_d_sae=32, k=2, seeds=(0, 1), probe_ks=(None,))


@pytest.fixture(scope="module")
def data():
    return make_images(160, seed=1)


def test_study_end_to_end_cached_and_resumable(tmp_path, data):
    images, labels = data
    model = make()
    kwargs = dict(
        labels={"count": labels}, sae_types=("topk", "adaptive"), sizes=TINY, out_dir=tmp_path
    )
    first = equisae.study(model, "head.2", images, **kwargs)
    layer = first["head.2"]
    assert layer.fit["dim"] == 64 and layer.representation["rank"] < 64 - N_DEAD + 1
    assert layer.representation["dropped"] == 64 - layer.representation["rank"]
    assert 1 <= layer.representation["condition_number"] < 1e6
    assert [len(v) for v in layer.saes.values()] == [2, 2]
    adaptive = layer.metrics["adaptive"][0]
    assert 0 < adaptive["fvu"] < 1 and 0 <= adaptive["pose_accuracy"] <= 1
    assert "fvu_oracle_pose" in adaptive and "pose_accuracy" not in layer.metrics["topk"][0]
    probe = layer.probes["raw"]["count"]
    assert probe["chance_f1"] == pytest.approx(1 / 3, abs=0.1) and probe["all"] > probe["chance_f1"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["provenance"]["data"]["n_images"] == 160
    assert results["provenance"]["split_sizes"] == {"train": 96, "val": 32, "test": 32}
    report = (tmp_path / "report.md").read_text()
    assert "chance F1" in report and "SAE-ready M: rank" in report
    # provenance in every saved SAE
    from equisae.sae.io import load_config

    meta = load_config(tmp_path / "head_2" / "saes" / "adaptive" / "sae_s1")["metadata"]
    assert meta["layer"] == "head.2" and meta["group"] == "C4" and meta["seed"] == 1
    assert meta["data_hash"] == results["provenance"]["data_hash"]
    # a rerun skips every finished part and gives the same numbers
    again = equisae.study(model, "head.2", images, **kwargs)
    assert {"head.2/fit", "head.2/saes/topk", "head.2/saes/adaptive"} <= set(again.skipped)
    assert again["head.2"].metrics == layer.metrics
    # other data (a changed label) is a different study: nothing of the SAEs is reused
    other = equisae.study(
        model, "head.2", images, **{**kwargs, "labels": {"count": labels.flip(0)}}
    )
    assert not any("saes" in part for part in other.skipped)


def test_documented_M_is_right_on_a_rank_deficient_relu_layer(data):
    """The adaptive SAE from sae_representation's M is within 20 % (oracle-pose FVU) of the best
    of the available fits; the fit's own rep.M is singular and refused with working advice."""
    from equisae.activations import orbit_activations
    from equisae.linrep import (
        fit_linear_representation,
        full_rank_representation,
        representation_summary,
        sae_representation,
    )
    from equisae.sae import EquivariantSAE
    from equisae.sae.batched import train_many
    from equisae.sae.evaluate import evaluate_on_orbits
    from equisae.sae.factory import build_sae
    from equisae.sae.train import TrainConfig

    images, _ = make_images(400, seed=2)
    ds = type("DS", (), {"images": images, "factors": {}})()
    acts = orbit_activations(make(), ds, "C4", "head.2", progress=False).acts
    train, val, test = acts[:240], acts[240:320], acts[320:]
    full = fit_linear_representation(train, val)
    assert full.rank < 64 - N_DEAD + 1
    assert torch.linalg.matrix_rank(full.M) == full.rank  # rep.M is singular
    with pytest.raises(ValueError, match="sae_representation"):
        EquivariantSAE(64, 32, k=2, M=full.M.float())
    rep, M = sae_representation(train, val)
    summary = representation_summary(rep, M)
    assert summary["dim"] == 64 and summary["rank"] == rep.rank
    assert torch.linalg.matrix_rank(M) == 64 and summary["condition_number"] < 1e3
    candidates = {
        "documented": M,
        "full fit": full_rank_representation(full),
        "max_dim=8": full_rank_representation(fit_linear_representation(train, val, max_dim=8)),
    }
    saes = [build_sae("adaptive", 64, 32, 4, seed=0, group="C4", M=m) for m in candidates.values()]
    cfg = TrainConfig(n_steps=150, warmup_steps=15, seed=0)
    train_many(saes, train, cfg, batch_size=64 // 4, seeds=[0] * len(saes))
    fvu = {
        name: evaluate_on_orbits(sae, test)["fvu_oracle_pose"]
        for name, sae in zip(candidates, saes, strict=True)
    }
    assert fvu["documented"] <= 1.2 * min(fvu.values()), fvu


def test_wide_layer_trains_in_the_reduced_basis(data, capsys):
    images, labels = data
    sizes = StudySizes(n_steps=10, batch_size=64, max_d_sae=16, k=2, seeds=(0,), probe_ks=())
    with pytest.warns(UserWarning, match="max_dim"):
        result = equisae.study(
            make(), "features.5", images, sae_types=("adaptive",), sizes=sizes, max_dim=None
        )
    rep = result["features.5"].representation
    assert rep["dim"] == 1024 and rep["sae_basis"] == "reduced" and rep["sae_dim"] == rep["rank"]
    assert "principal basis" in capsys.readouterr().out
    assert result["features.5"].saes["adaptive"][0].d_in == rep["rank"]


def test_study_input_errors(data):
    images, labels = data
    with pytest.raises(KeyError, match="head.9"):
        equisae.study(make(), "head.9", images)
    with pytest.raises(ValueError, match=r"labels\['count'\] must have shape \(160,\)"):
        equisae.study(make(), "head.2", images, labels={"count": labels[:5]})
    with pytest.raises(ValueError, match=r"labels\['one'\] has a single class"):
        equisae.study(make(), "head.2", images, labels={"one": labels * 0})
    with pytest.raises(ValueError, match="exactly one of images= .* and source="):
        equisae.study(make(), "head.2")
    with pytest.raises(ValueError, match="cyclic"):
        equisae.study(make(), "head.2", images, group="D4")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_load_model_specs_and_checkpoint(tmp_path):
    model = load_model("foreign_model:make")
    assert isinstance(model, torch.nn.Module) and not model.training
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "ckpt.pt")
    loaded = load_model("foreign_model:make", str(tmp_path / "ckpt.pt"))
    assert torch.equal(loaded.head[3].bias, state["head.3.bias"])
    torch.jit.script(make()).save(str(tmp_path / "model.pt"))
    scripted = load_model(str(tmp_path / "model.pt"))
    x = make_images(4)[0]
    torch.testing.assert_close(scripted(x), make()(x))
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        load_model("no_such_module:make")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        load_model("foreign_model:nothing")
    with pytest.raises(FileNotFoundError, match="--checkpoint file not found"):
        load_model("foreign_model:make", str(tmp_path / "missing.pt"))
    torch.save({"bad": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not fit the model"):
        load_model("foreign_model:make", str(tmp_path / "bad.pt"))


def test_cli_images_with_own_model_end_to_end(tmp_path, monkeypatch, capsys):
    from equisae.cli import main

    folder = write_png_folder(tmp_path / "pngs", n=100)
    out = tmp_path / "out"
    # the module, not the function equisae.study that shadows its name on the package
    monkeypatch.setattr(sys.modules["equisae.study"], "study_sizes", lambda quick: TINY)
    argv = ["images", "--model", "foreign_model:make", "--layer", "head.2", "--source", "folder"]
    argv += ["--path", str(folder), "--quick", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["provenance"]["data"]["n_images"] == 100
    assert results["provenance"]["labels"] == ["label"]
    layer = results["layers"]["head.2"]
    assert set(layer["saes"]) == {"topk", "wide", "adaptive"}
    assert "chance_f1" in layer["probes"]["adaptive"]["label"]
    assert "wrote" in capsys.readouterr().out
    assert main(argv[:2] + ["foreign_model:nothing"] + argv[3:]) == 1
    assert "has no 'nothing'" in capsys.readouterr().err

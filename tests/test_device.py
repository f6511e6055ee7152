"""Tests for equisae.device and the --device plumbing: the resolver, CPU runs bit-identical to
the default (same hashes, same weights, same metrics), GPU runs in their own cache entries, and
the CUDA path where a GPU is present."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from equisae.device import (
    DEVICE_ENV,
    current_device,
    device_config,
    resolve_device,
    set_device,
    use_device,
)

CUDA = torch.cuda.is_available()


@pytest.fixture
def no_gpu(monkeypatch):
    """A torch that sees neither CUDA nor MPS, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv(DEVICE_ENV, raising=False)


def test_auto_is_cpu_without_a_gpu_and_names_are_checked(no_gpu) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, mps, got 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device(3)  # type: ignore[arg-type]


def test_cuda_and_mps_without_them_raise_a_clear_error(no_gpu) -> None:
    with pytest.raises(RuntimeError, match=r"'cuda' was asked for but torch.cuda.is_available"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="use --device cpu or --device auto"):
        resolve_device("cuda:0")
    with pytest.raises(RuntimeError, match=r"'mps' was asked for"):
        resolve_device("mps")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: the unpatched error cannot happen")
def test_auto_gives_cpu_here_and_cuda_raises_here() -> None:
    if not torch.backends.mps.is_available():
        assert resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="cuda"):
        resolve_device("cuda")


def test_auto_prefers_cuda_then_mps(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_run_device_travels_in_the_environment(no_gpu, monkeypatch) -> None:
    assert current_device() == torch.device("cpu")  # unset: the CPU, never auto
    with use_device("auto") as dev:
        assert dev.type == "cpu" and current_device().type == "cpu"
        import os

        assert os.environ[DEVICE_ENV] == "cpu"
    assert DEVICE_ENV not in __import__("os").environ
    with pytest.raises(RuntimeError, match="cuda"), use_device("cuda"):
        pass
    assert DEVICE_ENV not in __import__("os").environ  # nothing set when resolving failed
    assert set_device("cpu").type == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        current_device()


def test_cpu_keeps_every_cache_hash_and_a_gpu_gets_its_own(no_gpu, monkeypatch) -> None:
    from equisae.activation_cache import activation_key
    from equisae.sweeps import InputsJob, ProbeJob, SAEJob, sweep_settings
    from equisae.sweeps.planted import planted_jobs

    s = sweep_settings("quick")

    def hashes() -> list[str]:
        sae = SAEJob("gcnn", "bottleneck", "adaptive", 4, (0,), "quick", s.training)
        jobs = [InputsJob("gcnn", "bottleneck", "quick"), sae, ProbeJob(sae, 0, s.probing)]
        key = activation_key("gcnn", "bottleneck", "quick", 0, "train")
        return [j.hash for j in jobs] + [planted_jobs("quick")[0].hash, json.dumps(key)]

    default = hashes()
    assert device_config("cpu") == {} and device_config() == {}
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert hashes() == default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolving touches no GPU
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    assert device_config() == {"device": "cuda"}
    on_gpu = hashes()
    assert all(a != b for a, b in zip(default, on_gpu, strict=True))
    assert '"device": "cuda"' in on_gpu[-1]


def test_cli_documents_and_checks_device(capsys) -> None:
    from equisae.cli import build_parser

    parser = build_parser()
    for command in ("reproduce", "sweep", "extended"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert "--device {auto,cpu,cuda,mps}" in capsys.readouterr().out
    assert parser.parse_args(["reproduce"]).device == "auto"
    assert parser.parse_args(["sweep", "frontier", "--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "--device", "tpu"])
    assert "tpu" in capsys.readouterr().err


# ---------------------------------------------------------------------- bit-identical on CPU


def _tree(root: Path) -> dict[str, bytes]:
    """Every file of the artifacts except the run's wall-clock records, by relative path."""
    skip = {"run.json", "manifest.json"}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip and "seconds" not in p.name
    }


def _without_times(metrics: object) -> object:
    if isinstance(metrics, dict):
        return {k: _without_times(v) for k, v in metrics.items() if "seconds" not in k}
    return metrics


def test_planted_sweep_on_cpu_is_bit_identical_to_the_default(tmp_path, monkeypatch) -> None:
    from equisae.sweeps.planted import PlantedSettings, run_planted

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    settings = PlantedSettings(
        mode="quick",
        d=8,
        feature_counts=(4,),
        seeds=(0,),
        n_train=120,
        n_test=40,
        n_steps=15,
        batch_size=32,
        models=("topk", "adaptive"),
    )

    def run(folder: Path, device: str | None):
        if device is None:
            return run_planted(
                "quick",
                scheduler="serial",
                progress=False,
                settings=settings,
                artifacts=str(folder),
            )
        with use_device(device):
            return run_planted(
                "quick",
                scheduler="serial",
                progress=False,
                settings=settings,
                artifacts=str(folder),
            )

    default, cpu = run(tmp_path / "default", None), run(tmp_path / "cpu", "cpu")
    assert [r.job.hash for r in default.results] == [r.job.hash for r in cpu.results]
    for a, b in zip(default.results, cpu.results, strict=True):
        assert _without_times(a.metrics) == _without_times(b.metrics)
        weights = [p.name for p in a.path.rglob("*.safetensors")]
        assert weights, "the planted job saves its SAE"
        for name in weights:
            assert (a.path / "sae" / name).read_bytes() == (b.path / "sae" / name).read_bytes()


@pytest.fixture
def tiny_inputs(tmp_path, monkeypatch):
    """Standard splits of 96/32/32 images and an untrained G-CNN (no base-model training)."""
    import equisae.data
    import equisae.models

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setenv("EQUISAE_ARTIFACTS", str(tmp_path))
    sizes = {"train": 96, "val": 32, "test": 32}
    monkeypatch.setattr(equisae.data, "dataset_sizes", lambda mode: dict(sizes))

    def fake_train_or_load(name, mode="quick", seed=0, progress=True, **kwargs):
        torch.manual_seed(seed)
        return equisae.models.build_model(name), {"folder": None}

    monkeypatch.setattr(equisae.models, "train_or_load", fake_train_or_load)
    return tmp_path


def test_sae_sweep_on_cpu_is_bit_identical_to_the_default(tiny_inputs) -> None:
    from equisae.runner import run_sweep
    from equisae.sweeps import ProbeJob, SAEJob, sweep_settings
    from equisae.sweeps.settings import SAETraining

    training = SAETraining(n_steps=6, batch_size=64, expansion=1, max_d_sae=32)
    probing = dataclasses.replace(
        sweep_settings("quick").probing, max_orbits=(48, 16, 16), probe_ks=(None,)
    )
    saes = [
        SAEJob("gcnn", "bottleneck", t, 4, (0, 1), "quick", training) for t in ("topk", "adaptive")
    ]
    jobs = [*saes, ProbeJob(saes[1], 1, probing)]
    default = run_sweep(jobs, scheduler="serial", progress=False, artifacts=tiny_inputs / "a")
    with use_device("cpu"):
        cpu = run_sweep(jobs, scheduler="serial", progress=False, artifacts=tiny_inputs / "b")
    default.raise_for_failures()
    cpu.raise_for_failures()
    assert [r.job.hash for r in default.results] == [r.job.hash for r in cpu.results]
    for a, b in zip(default.results, cpu.results, strict=True):
        assert _without_times(a.metrics) == _without_times(b.metrics)
    weights_a = {k: v for k, v in _tree(tiny_inputs / "a").items() if k.endswith(".safetensors")}
    weights_b = {k: v for k, v in _tree(tiny_inputs / "b").items() if k.endswith(".safetensors")}
    assert len(weights_a) >= 5 and weights_a == weights_b  # 4 SAEs + the representation


# ---------------------------------------------------------------------- the CUDA path


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_train_many_and_evaluation_on_cuda_match_the_cpu() -> None:
    from equisae.sae.batched import train_many
    from equisae.sae.evaluate import evaluate_on_orbits
    from equisae.sae.factory import build_sae
    from equisae.sae.train import TrainConfig, orbit_training_data

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(256, 4, 16, generator=g, dtype=torch.float64)
    M = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    for variant in ("topk", "crosscoder", "adaptive"):
        takes_orbits = variant != "topk"
        data, batch = orbit_training_data(acts, takes_orbits, 64)
        runs = {}
        for device in ("cpu", "cuda"):
            saes = [
                build_sae(
                    variant,
                    16,
                    32,
                    4,
                    seed=s,
                    M=M if variant == "adaptive" else None,
                    dtype="float64",
                )
                for s in (0, 1, 2)
            ]
            cfgs = [TrainConfig(n_steps=30, seed=s, dead_after=200) for s in (0, 1, 2)]
            results = train_many(saes, data, cfgs, batch_size=batch, device=device)
            assert all(sae.W_dec.device.type == device for sae in saes)
            metrics = [evaluate_on_orbits(sae, acts, device=device) for sae in saes]
            runs[device] = (saes, results, metrics)
        for cpu, gpu in zip(runs["cpu"][0], runs["cuda"][0], strict=True):
            for name, t in cpu.state_dict().items():
                torch.testing.assert_close(gpu.state_dict()[name].cpu(), t, rtol=1e-6, atol=1e-8)
        for cpu, gpu in zip(runs["cpu"][2], runs["cuda"][2], strict=True):
            assert gpu["fvu"] == pytest.approx(cpu["fvu"], rel=1e-6)
            if "pose_accuracy" in cpu:
                assert gpu["pose_accuracy"] == pytest.approx(cpu["pose_accuracy"], abs=0.01)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_base_model_training_and_activations_on_cuda() -> None:
    from equisae.activations import extract_many
    from equisae.models import build_model
    from equisae.models.train import TrainSettings, train_model

    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = build_model("cnn_augmented")
    settings = TrainSettings(epochs=1, batch_size=32)
    history = train_model(model, images, settings, True, 0, progress=False, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(torch.tensor(history["step_loss"])))
    model.cpu()
    acts = extract_many(model, images, ["bottleneck"], progress=False, device="cuda")["bottleneck"]
    assert acts.device.type == "cpu" and next(model.parameters()).device.type == "cpu"
    ref = extract_many(model, images, ["bottleneck"], progress=False)["bottleneck"]
    torch.testing.assert_close(acts, ref, rtol=1e-4, atol=1e-5)

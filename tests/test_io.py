"""Atomic writes, results files and configuration hashes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from equisae import io


def test_write_json_atomic_round_trip_and_no_temp_files(tmp_path) -> None:
    data = {"a": torch.tensor([1.0, 2.0]), "b": np.float32(0.5), "c": np.arange(3)}
    path = io.write_json_atomic(tmp_path / "sub" / "x.json", data)
    assert io.read_json(path) == {"a": [1.0, 2.0], "b": 0.5, "c": [0, 1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_failed_write_leaves_previous_file_intact(tmp_path) -> None:
    path = io.write_json_atomic(tmp_path / "x.json", {"v": 1})
    with pytest.raises(TypeError):
        io.write_json_atomic(path, {"v": object()})
    assert io.read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_non_finite_numbers_become_null(tmp_path) -> None:
    path = io.write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
    assert json.loads(path.read_text()) == {"v": None}


def test_read_json_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        io.read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        io.read_json(bad)


def test_results_round_trip_and_mode_check(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(io.RESULTS_ENV, str(tmp_path))
    io.save_results("quick", "01_data", {"n": 3})
    assert io.load_results("quick", "01_data") == {"n": 3}
    with pytest.raises(ValueError, match="mode"):
        io.results_dir("medium")


@dataclasses.dataclass(frozen=True)
class _Cfg:
    k: int
    name: str


def test_config_hash_is_stable_across_processes_and_sensitive_to_fields() -> None:
    here = io.config_hash(_Cfg(4, "topk"))
    code = "from equisae.io import config_hash; print(config_hash({'k': 4, 'name': 'topk'}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.stdout.strip() == here
    assert io.config_hash(_Cfg(5, "topk")) != here


def test_seed_everything_is_deterministic() -> None:
    a = io.seed_everything(3)
    x = torch.randn(4, generator=a)
    b = io.seed_everything(3)
    assert torch.equal(x, torch.randn(4, generator=b))


def test_atomic_folder_writes_readable_folder_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "art"
    with io.atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not target.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"b")
    assert (target / "a.txt").read_text() == "a" and (target / "sub" / "b.bin").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["art"]
    assert target.stat().st_mode & 0o777 == io.DIR_MODE
    assert (target / "sub").stat().st_mode & 0o777 == io.DIR_MODE
    assert (target / "a.txt").stat().st_mode & 0o777 == io.FILE_MODE
    if not io._UMASK & 0o050:  # the usual umask (022, 002): the group can enter and read
        assert target.stat().st_mode & 0o050 == 0o050
        assert (target / "a.txt").stat().st_mode & 0o040


def test_atomic_folder_error_removes_temp_and_keeps_previous(tmp_path) -> None:
    target = tmp_path / "art"
    with io.atomic_folder(target) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError, match="boom"), io.atomic_folder(target) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("boom")
    assert (target / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_atomic_folder_replaces_unless_keep_says_otherwise(tmp_path) -> None:
    target = tmp_path / "art"
    for value in ("1", "2"):
        with io.atomic_folder(target) as tmp:
            (tmp / "v").write_text(value)
    assert (target / "v").read_text() == "2"  # replaced
    with io.atomic_folder(target, keep=lambda p: (p / "v").read_text() == "2") as tmp:
        (tmp / "v").write_text("3")
    assert (target / "v").read_text() == "2"  # kept: an equivalent artifact was already there
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra", "no_manifest"])
def test_verify_manifest_names_the_damaged_file(tmp_path, damage) -> None:
    with io.atomic_folder(tmp_path / "art") as tmp:
        (tmp / "w.bin").write_bytes(bytes(range(256)))
        (tmp / "m.json").write_text("{}")
        io.write_manifest(tmp)
    folder = tmp_path / "art"
    assert io.verify_manifest(folder, required=("w.bin",)) is None
    weights = folder / "w.bin"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[100] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:128])
    elif damage == "delete":
        weights.unlink()
    elif damage == "extra":
        (folder / "stray.txt").write_text("x")
    else:
        (folder / "manifest.json").unlink()
    problem = io.verify_manifest(folder)
    assert problem is not None and "\n" not in problem
    expected = {"extra": "stray.txt", "no_manifest": "manifest.json"}.get(damage, "w.bin")
    assert expected in problem

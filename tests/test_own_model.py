"""book/own_model.md runs as written: its Python blocks, in order, as one script."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "book" / "own_model.md"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page's text and the namespace its code leaves behind (one core, in a temp folder)."""
    text = PAGE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "own_model_page"}
    start = time.perf_counter()
    try:
        exec(compile("\n".join(blocks), str(PAGE), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    namespace["_seconds"] = time.perf_counter() - start
    namespace["_blocks"] = blocks
    return text, namespace


def test_page_covers_the_whole_route(page):
    text, ns = page
    assert len(ns["_blocks"]) >= 8
    for needed in ("equisae.study(", "sae_representation", "probe_factors", "save_sae", "load_sae"):
        assert any(needed in block for block in ns["_blocks"]), needed
    assert "equisae images --model" in text and "device=" in text
    assert "G-invariant" not in text  # raw-encoder latents are measured, not called invariant


def test_one_call_result(page):
    _, ns = page
    layer = ns["layer"]
    assert layer.fit["r2_single"][0] == pytest.approx(1.0, abs=1e-6)  # M^0 = I
    assert layer.representation["dim"] == 64 and layer.representation["dropped"] >= 24
    assert set(layer.metrics) == {"topk", "wide", "adaptive"}
    scores = ns["scores"]
    assert scores["all"] > scores["chance_f1"]
    assert (ns["folder"] / "results.json").is_file() and (ns["folder"] / "report.md").is_file()
    assert {"head.2/saes/adaptive", "head.2/fit"} <= set(ns["again"].skipped)


def test_step_by_step_numbers(page):
    _, ns = page
    acts, rep, fit, M = ns["acts"], ns["rep"], ns["fit"], ns["M"]
    assert tuple(acts.acts.shape) == (400, 4, 64)
    assert max(fit.r2_identity[1:]) < min(fit.r2_single[1:])  # M explains more than nothing
    assert int(torch.linalg.matrix_rank(rep.M)) == rep.rank < 64  # rep.M is singular
    assert int(torch.linalg.matrix_rank(M)) == 64  # the SAE-ready M is not
    m = ns["m"]  # the adaptive SAE's evaluation
    assert 0 < m["fvu"] < 1 and 0 <= m["pose_accuracy"] <= 1
    assert m["latent_equivariance_error"] > 0.05  # not invariant, and the page says so
    assert tuple(ns["latents"].shape) == (400, 4, 64)
    assert int((ns["latents"] != 0).sum(-1).max()) <= 4
    assert torch.equal(ns["again_sae"].W_dec, ns["adaptive"].W_dec)


def test_page_runs_fast_enough(page):
    _, ns = page
    assert ns["_seconds"] < 180, f"the page took {ns['_seconds']:.0f} s"

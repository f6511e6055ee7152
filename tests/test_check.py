"""Tests of equisae.check on small synthetic results trees."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from equisae import check
from equisae.io import write_json_atomic


def _write(folder: Path, stem: str, tree: dict) -> None:
    write_json_atomic(folder / f"{stem}.json", tree)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    ref, run = tmp_path / "reference", tmp_path / "run"
    ref.mkdir()
    run.mkdir()
    return ref, run


REFERENCE = {
    "r2": {"cnn_canonical": [0.99, 0.98, 0.97], "cnn_augmented": [0.90, 0.85, 0.80]},
    "frontier": {"fvu": [0.5, 0.3, 0.2], "l0": [8.0, 16.0, 32.0]},
    "probing": {"f1_invariant": {"mean": 0.80, "std": 0.02, "n_seeds": 3}},
    "planted": {"recovery": {"per_seed": [0.90, 0.92, 0.94]}},
    "n_train": 2000,
    "seconds": 12.5,
    "model": "cnn",
}


def test_identical_trees_reproduce(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "03_linrep", REFERENCE)
    _write(run, "03_linrep", REFERENCE)
    report = check.compare_results(ref, run)
    assert report.ok
    assert not report.failures and not report.notes
    # every numeric leaf except the timing is compared (3+3+3+3+2 ... counted explicitly)
    paths = {leaf.path for leaf in report.leaves}
    assert "03_linrep/r2/cnn_canonical/2" in paths
    assert "03_linrep/frontier/l0/1" in paths
    assert "03_linrep/n_train" in paths
    assert not any("seconds" in p for p in paths)
    figures = report.figures()
    assert set(figures) == {
        "03_linrep/r2",
        "03_linrep/frontier",
        "03_linrep/probing",
        "03_linrep/planted",
        "03_linrep/n_train",
    }
    assert all(s.reproduced for s in figures.values())


def test_relative_tolerance_and_floor(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "05_frontier", {"frontier": {"fvu": [0.5, 0.001]}, "other": 100.0})
    # FVU: 10 % relative with a 0.01 floor; default: 10 % relative.
    _write(run, "05_frontier", {"frontier": {"fvu": [0.54, 0.009]}, "other": 109.0})
    assert check.compare_results(ref, run).ok
    _write(run, "05_frontier", {"frontier": {"fvu": [0.56, 0.001]}, "other": 109.0})
    report = check.compare_results(ref, run)
    assert not report.ok
    assert [leaf.path for leaf in report.failed_leaves] == ["05_frontier/frontier/fvu/0"]
    assert not report.figures()["05_frontier/frontier"].reproduced
    assert report.figures()["05_frontier/other"].reproduced
    _write(run, "05_frontier", {"frontier": {"fvu": [0.5, 0.001]}, "other": 111.0})
    assert not check.compare_results(ref, run).ok


def test_seed_spread_tolerance(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    tree = {"probing": {"f1": {"mean": 0.80, "std": 0.02}}}
    _write(ref, "06_probing", tree)
    # 3 x spread = 0.06 > the F1 floor of 0.03: a 0.05 shift passes, 0.07 does not.
    _write(run, "06_probing", {"probing": {"f1": {"mean": 0.85, "std": 0.02}}})
    assert check.compare_results(ref, run).ok
    _write(run, "06_probing", {"probing": {"f1": {"mean": 0.87, "std": 0.02}}})
    assert not check.compare_results(ref, run).ok
    # with no spread the floor applies: 0.02 passes, 0.04 does not
    _write(ref, "06_probing", {"probing": {"f1": {"mean": 0.80, "std": 0.0}}})
    _write(run, "06_probing", {"probing": {"f1": {"mean": 0.82, "std": 0.0}}})
    assert check.compare_results(ref, run).ok
    _write(run, "06_probing", {"probing": {"f1": {"mean": 0.84, "std": 0.0}}})
    assert not check.compare_results(ref, run).ok


def test_per_seed_lists_compare_means(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "04_planted", {"recovery": {"per_seed": [0.80, 0.90, 1.00]}})
    # spread = pstdev = 0.0816, tolerance 0.245: means 0.9 vs 1.1 pass although seeds differ
    _write(run, "04_planted", {"recovery": {"per_seed": [1.05, 1.10, 1.15]}})
    report = check.compare_results(ref, run)
    assert report.ok
    (leaf,) = report.leaves
    assert leaf.path == "04_planted/recovery/per_seed/mean"
    assert leaf.tolerance == pytest.approx(3 * 0.0816497, rel=1e-4)
    _write(run, "04_planted", {"recovery": {"per_seed": [1.40, 1.40, 1.40]}})
    assert not check.compare_results(ref, run).ok


def test_counts_are_exact_and_bools_match(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "01_data", {"sizes": {"n_train": 2000}, "flags": {"exact": True}})
    _write(run, "01_data", {"sizes": {"n_train": 2001}, "flags": {"exact": True}})
    assert not check.compare_results(ref, run).ok
    _write(run, "01_data", {"sizes": {"n_train": 2000}, "flags": {"exact": False}})
    assert not check.compare_results(ref, run).ok
    _write(run, "01_data", {"sizes": {"n_train": 2000}, "flags": {"exact": True}})
    assert check.compare_results(ref, run).ok


def test_missing_files_and_keys_fail_extras_are_notes(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "02_base", {"mse": {"cnn": 0.1, "mlp": 0.2}})
    _write(ref, "03_linrep", {"r2": 1.0})
    _write(run, "02_base", {"mse": {"cnn": 0.1, "vit": 0.3}, "new_figure": 1.0})
    _write(run, "99_extra", {"x": 1.0})
    report = check.compare_results(ref, run)
    assert not report.ok
    assert any("missing key 02_base/mse/mlp" in f for f in report.failures)
    assert any(f.startswith("03_linrep: results file missing") for f in report.failures)
    assert any("extra key 02_base/mse/vit" in n for n in report.notes)
    assert any("02_base/new_figure: extra figure" in n for n in report.notes)
    assert any("99_extra: extra results file" in n for n in report.notes)
    figures = report.figures()
    assert not figures["02_base/mse"].reproduced
    assert not figures["03_linrep"].reproduced


def test_shape_and_type_mismatches_fail(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "05", {"curve": [1.0, 2.0], "nested": {"a": 1.0}, "value": 1.0})
    _write(run, "05", {"curve": [1.0, 2.0, 3.0], "nested": [1.0], "value": None})
    report = check.compare_results(ref, run)
    assert not report.ok
    assert any("05/curve has 3 entries, the reference 2" in f for f in report.failures)
    assert any("05/nested is a mapping in the reference only" in f for f in report.failures)
    assert [leaf.path for leaf in report.failed_leaves] == ["05/value"]


def test_string_changes_are_notes(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "02", {"meta": {"torch": "2.13.0", "mse": 0.1}})
    _write(run, "02", {"meta": {"torch": "2.14.0", "mse": 0.1}})
    report = check.compare_results(ref, run)
    assert report.ok
    assert any("changed from '2.13.0' to '2.14.0'" in n for n in report.notes)


def test_missing_reference_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="reference folder not found"):
        check.compare_results(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no reference results"):
        check.compare_results(tmp_path / "empty", tmp_path)


def test_rules_cover_documented_patterns() -> None:
    assert check.rule_for("03/r2/cnn/1").description.startswith("R^2")
    assert check.rule_for("06/probing/f1_macro").description.startswith("F1")
    assert check.rule_for("05/frontier/fvu/0").rel == pytest.approx(0.10)
    assert check.rule_for("02/train_seconds").skip
    assert check.rule_for("02/wall_time/3").skip
    assert check.rule_for("01_data/render_images_per_second").skip
    assert check.rule_for("02/timings/cnn_canonical").skip
    assert not check.rule_for("02/optimiser/lr").skip
    assert check.rule_for("01/sizes/n_train").abs == 0.0
    assert check.rule_for("04/something_else") is check.DEFAULT_RULE


def test_publish_and_main_check(tmp_path: Path) -> None:
    results = tmp_path / "results" / "quick"
    _write(results, "03_linrep", {"r2": [1.0, 0.99]})
    out = io.StringIO()
    assert check.main_check("quick", root=tmp_path, stream=out) == 2
    assert "reference folder not found" in out.getvalue()
    target = check.publish_reference("quick", root=tmp_path)
    assert target == tmp_path / "reference" / "quick"
    assert json.loads((target / "03_linrep.json").read_text()) == {"r2": [1.0, 0.99]}
    out = io.StringIO()
    assert check.main_check("quick", root=tmp_path, stream=out) == 0
    assert "1/1 figures reproduced" in out.getvalue()
    _write(results, "03_linrep", {"r2": [1.0, 0.90]})
    out = io.StringIO()
    assert check.main_check("quick", root=tmp_path, stream=out) == 1
    assert "NOT reproduced" in out.getvalue()
    assert "03_linrep/r2/1" in out.getvalue()
    # publishing again replaces the reference, leaving no staging folders behind
    check.publish_reference("quick", root=tmp_path)
    assert check.main_check("quick", root=tmp_path, stream=io.StringIO()) == 0
    assert sorted(p.name for p in (tmp_path / "reference").iterdir()) == ["quick"]


def test_bad_mode_and_nothing_to_publish(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        check.reference_dir("medium", tmp_path)
    with pytest.raises(FileNotFoundError, match="no results"):
        check.publish_reference("quick", root=tmp_path)


def test_cache_flags_are_run_state_not_results(dirs: tuple[Path, Path]) -> None:
    """A warm rerun loads what a fresh run computed: its cache flags differ, its numbers do not."""
    ref, run = dirs
    _write(ref, "07_digits", {"base_models": [{"cached": False, "mse": 0.01}], "n_cached": 0})
    _write(run, "07_digits", {"base_models": [{"cached": True, "mse": 0.01}], "n_cached": 4})
    assert check.compare_results(ref, run).ok
    _write(run, "07_digits", {"base_models": [{"cached": True, "mse": 0.5}], "n_cached": 4})
    assert not check.compare_results(ref, run).ok


# --- canonical forms, the envelope, labels --------------------------------------------------


def _envelope(folder: Path, leaves: dict) -> None:
    write_json_atomic(folder / check.ENVELOPE_FILE, {"mode": "quick", "leaves": leaves})


def test_eigenvalues_in_another_order_reproduce(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    real, imag = [1.0, 0.0, 0.0, -1.0, 0.5], [0.0, 1.0, -1.0, 0.0, 0.0]
    _write(ref, "03", {"m": {"eigenvalues": {"real": real, "imag": imag}}})
    order = [3, 1, 4, 0, 2]  # another machine's LAPACK order, with rounding noise
    _write(
        run,
        "03",
        {
            "m": {
                "eigenvalues": {
                    "real": [real[i] + 1e-6 for i in order],
                    "imag": [imag[i] for i in order],
                }
            }
        },
    )
    report = check.compare_results(ref, run)
    assert report.ok, report.format_table()
    assert len(report.leaves) == 10
    # a moved eigenvalue is still caught after the matching
    moved = {"real": [1.0, 0.0, 0.0, -1.0, 0.9], "imag": imag}
    _write(run, "03", {"m": {"eigenvalues": moved}})
    report = check.compare_results(ref, run)
    assert [leaf.path for leaf in report.failed_leaves] == ["03/m/eigenvalues/real/4"]


def test_match_eigenvalues_is_a_permutation() -> None:
    ref = {"real": [0.0, 1.0, 2.0], "imag": [1.0, 0.0, 0.0]}
    run = {"real": [2.1, 0.0, 0.9], "imag": [0.0, 1.0, 0.0]}
    matched = check.match_eigenvalues(ref, run)
    assert matched == {"real": [0.0, 0.9, 2.1], "imag": [1.0, 0.0, 0.0]}
    assert sorted(matched["real"]) == sorted(run["real"])
    # one more eigenvalue in the run (a higher rank): the extra one is dropped
    more = {"real": [2.1, 5.0, 0.0, 0.9], "imag": [0.0, 0.0, 1.0, 0.0]}
    assert check.match_eigenvalues(ref, more) == {"real": [0.0, 0.9, 2.1], "imag": [1.0, 0.0, 0.0]}
    # one fewer: the reference eigenvalue without a partner gets its nearest one
    fewer = {"real": [2.1, 0.0], "imag": [0.0, 1.0]}
    assert check.match_eigenvalues(ref, fewer)["real"] == [0.0, 2.1, 2.1]  # 1 is nearer 2.1 than i
    # not eigenvalue lists: left as they are
    assert check.match_eigenvalues(ref, {"real": [], "imag": []}) == {"real": [], "imag": []}


def test_a_value_outside_its_envelope_fails_inside_passes(dirs: tuple[Path, Path]) -> None:
    """The envelope [0.30, 0.34] (reference 0.32) widened by 2 x range (0.08) plus the F1
    floor (0.03): [0.19, 0.45] passes; a regression to 0.10 fails, and the message says the
    value, the band and which environment set each bound."""
    ref, run = dirs
    _write(ref, "06", {"probe": {"f1": 0.32}, "fvu": 0.5})
    _envelope(ref, {"06/probe/f1": [0.30, 0.34, "mkl_avx2", "aten_default"]})
    _write(run, "06", {"probe": {"f1": 0.44}, "fvu": 0.5})
    report = check.compare_results(ref, run)
    assert report.ok, report.format_table()
    assert report.envelope is not None
    (leaf,) = [leaf for leaf in report.leaves if leaf.path == "06/probe/f1"]
    assert leaf.low == pytest.approx(0.19) and leaf.high == pytest.approx(0.45)
    # without the envelope the fixed rule (F1 within 0.03) fails the same run
    assert not check.compare_results(ref, run, use_envelope=False).ok
    _write(run, "06", {"probe": {"f1": 0.10}, "fvu": 0.5})
    report = check.compare_results(ref, run)
    assert not report.ok
    (failed,) = report.failed_leaves
    table = report.format_table()
    assert "06/probe/f1: 0.1 outside [0.19, 0.45]" in table
    assert "from mkl_avx2" in table and "from aten_default" in table
    # a leaf without an envelope keeps the fixed rule: FVU 10 %
    _write(run, "06", {"probe": {"f1": 0.32}, "fvu": 0.6})
    assert [leaf.path for leaf in check.compare_results(ref, run).failed_leaves] == ["06/fvu"]


def test_the_reference_widens_its_envelope(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    _write(ref, "05", {"ratio": 2.0})
    _envelope(ref, {"05/ratio": [1.0, 1.1, "native", "mkl_avx2"]})  # reference above the runs
    _write(run, "05", {"ratio": 2.5})  # band [1 - 2 - 0.2, 2 + 2 + 0.2]
    report = check.compare_results(ref, run)
    assert report.ok
    assert "max 2 from reference" in report.leaves[0].rule


def test_unstable_booleans_and_labels_are_reported_not_failed(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs
    tree = {"verdicts": {"digit": {"holds": False, "verdict": "negative"}, "lags": True}}
    _write(ref, "07", tree)
    unstable = {"values": ["False", "True"], "unstable": True, "changed_in": ["mkl_avx2"]}
    _envelope(ref, {"07/verdicts/digit/holds": unstable, "07/verdicts/digit/verdict": unstable})
    flipped = {"verdicts": {"digit": {"holds": True, "verdict": "positive"}, "lags": True}}
    _write(run, "07", flipped)
    report = check.compare_results(ref, run)
    assert report.ok, report.format_table()
    assert {leaf.path for leaf in report.unstable_leaves} == {
        "07/verdicts/digit/holds",
        "07/verdicts/digit/verdict",
    }
    assert "unstable (changed across the envelope runs" in report.format_table()
    # a boolean that did not move across the envelope runs must still match
    flipped["verdicts"]["lags"] = False
    _write(run, "07", flipped)
    report = check.compare_results(ref, run)
    assert [leaf.path for leaf in report.failed_leaves] == ["07/verdicts/lags"]


def test_a_key_absent_in_some_envelope_runs_is_unstable_not_missing(
    dirs: tuple[Path, Path],
) -> None:
    """A count kept only where it is non-zero (a sparse dictionary) can be absent on another
    machine: when the envelope saw it absent, the run's missing key is reported as unstable;
    a key that every envelope run had is still a missing-key failure."""
    ref, run = dirs
    _write(ref, "09", {"per_class": {"red": 2, "blue": 3}, "alive": 7})
    absent = {"values": ["2", "None"], "unstable": True, "changed_in": ["mkl_avx2+aten_default"]}
    _envelope(ref, {"09/per_class/red": absent})
    _write(run, "09", {"per_class": {"blue": 3}, "alive": 7})
    report = check.compare_results(ref, run)
    assert report.ok, report.format_table()
    assert [leaf.path for leaf in report.unstable_leaves] == ["09/per_class/red"]
    _write(run, "09", {"per_class": {"red": 2}, "alive": 7})
    report = check.compare_results(ref, run)
    assert not report.ok
    assert any("missing key 09/per_class/blue" in f for f in report.failures)


def test_full_mode_verdict_labels_must_match_exactly(tmp_path: Path) -> None:
    """Full mode has no envelope: a verdict label or a holds flag that differs fails, other
    strings are notes, and numbers are judged within their seed spread."""
    ref = tmp_path / "reference" / "full"
    results = tmp_path / "results" / "full"
    tree = {
        "claims": [{"id": "claim1", "verdict": "supported", "number": "0.95 ± 0.03"}],
        "verdicts": {"f1": {"holds": True, "delta": {"mean": 0.05, "sd": 0.02}}},
    }
    _write(ref, "claims", tree)
    same = json.loads(json.dumps(tree))
    same["claims"][0]["number"] = "0.96 ± 0.03"
    same["verdicts"]["f1"]["delta"]["mean"] = 0.09  # within 3 x sd = 0.06
    _write(results, "claims", same)
    out = io.StringIO()
    assert check.main_check("full", root=tmp_path, stream=out) == 0, out.getvalue()
    assert "changed from '0.95 ± 0.03'" in out.getvalue()
    other = json.loads(json.dumps(same))
    other["claims"][0]["verdict"] = "mixed"
    _write(results, "claims", other)
    out = io.StringIO()
    assert check.main_check("full", root=tmp_path, stream=out) == 1
    assert "claims/claims/0/verdict: 'mixed' vs 'supported'" in out.getvalue()
    other = json.loads(json.dumps(same))
    other["verdicts"]["f1"]["holds"] = False
    _write(results, "claims", other)
    assert check.main_check("full", root=tmp_path, stream=io.StringIO()) == 1


def test_per_seed_records_are_judged_within_their_seed_spread(dirs: tuple[Path, Path]) -> None:
    ref, run = dirs

    def rec(seed: int, f1: float, k: int = 8) -> dict:
        return {"model": "cnn", "k": k, "seed": seed, "f1": f1}

    # seeds of k=8 spread by pstdev 0.05: a 0.1 shift of one seed passes (3 x 0.05 = 0.15);
    # k=16 has one seed, no spread: the F1 rule (0.03) applies
    _write(ref, "06", {"runs": [rec(0, 0.80), rec(1, 0.90), rec(0, 0.5, k=16)]})
    _write(run, "06", {"runs": [rec(0, 0.90), rec(1, 0.85), rec(0, 0.52, k=16)]})
    assert check.compare_results(ref, run).ok
    _write(run, "06", {"runs": [rec(0, 0.96), rec(1, 0.85), rec(0, 0.52, k=16)]})
    assert [leaf.path for leaf in check.compare_results(ref, run).failed_leaves] == ["06/runs/0/f1"]
    _write(run, "06", {"runs": [rec(0, 0.80), rec(1, 0.90), rec(0, 0.55, k=16)]})
    assert [leaf.path for leaf in check.compare_results(ref, run).failed_leaves] == ["06/runs/2/f1"]


def test_envelope_from_runs_records_bounds_and_instability(tmp_path: Path) -> None:
    from equisae.envelope import envelope_from_runs

    ref = tmp_path / "reference"
    runs = {name: tmp_path / name for name in ("native", "mkl_avx2", "aten_default")}
    _write(ref, "05", {"fvu": 0.50, "n": 3, "holds": True, "seconds": 1.0, "e": {"verdict": "a"}})
    _write(
        runs["native"],
        "05",
        {"fvu": 0.50, "n": 3, "holds": True, "seconds": 2.0, "e": {"verdict": "a"}},
    )
    _write(
        runs["mkl_avx2"],
        "05",
        {"fvu": 0.46, "n": 3, "holds": False, "seconds": 3.0, "e": {"verdict": "a"}},
    )
    _write(
        runs["aten_default"],
        "05",
        {"fvu": 0.55, "n": 3, "holds": True, "seconds": 4.0, "e": {"verdict": "a"}},
    )
    envelope = envelope_from_runs("quick", ref, runs)
    leaves = envelope["leaves"]
    assert leaves["05/fvu"] == [0.46, 0.55, "mkl_avx2", "aten_default"]
    assert leaves["05/holds"]["unstable"] and leaves["05/holds"]["changed_in"] == ["mkl_avx2"]
    # unmoved leaves (the count, the label) and timings are left out
    assert set(leaves) == {"05/fvu", "05/holds"}
    assert envelope["n_leaves"] == 4 and envelope["n_moved"] == 2
    assert (ref / check.ENVELOPE_FILE).is_file()
    # the envelope file is not a results file, and every envelope run passes its own check
    for folder in runs.values():
        report = check.compare_results(ref, folder)
        assert report.ok, report.format_table()
        assert "envelope" not in {leaf.figure for leaf in report.leaves}
    _write(
        runs["native"],
        "05",
        {"fvu": 0.9, "n": 3, "holds": True, "seconds": 2.0, "e": {"verdict": "a"}},
    )
    assert not check.compare_results(ref, runs["native"]).ok


def test_environments_set_only_their_numeric_variables() -> None:
    from equisae.envelope import EMULATED, ENVIRONMENTS, environment_for

    base = {"PATH": "/bin", "MKL_ENABLE_INSTRUCTIONS": "AVX512", "ATEN_CPU_CAPABILITY": "avx2"}
    native = environment_for("native", base)
    assert native == {"PATH": "/bin"}
    emulated = environment_for(EMULATED, base)
    assert emulated["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert emulated["ATEN_CPU_CAPABILITY"] == "default"
    assert set(ENVIRONMENTS) >= {"native", "mkl_avx2", "aten_default", EMULATED}
    with pytest.raises(KeyError, match="unknown numeric environment 'avx9'"):
        environment_for("avx9", base)


def test_make_test_portable_emulates_the_envelope_environment() -> None:
    """The Makefile's emulated machine is the envelope's, and CI runs it after make test."""
    from equisae.envelope import EMULATED, ENVIRONMENTS

    root = Path(__file__).resolve().parents[1]
    makefile = (root / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("EMULATED_ENV :="))
    assigned = dict(item.split("=", 1) for item in line.split(":=", 1)[1].split())
    assert assigned == ENVIRONMENTS[EMULATED]
    assert "equisae check --mode quick --results" in makefile
    ci = (root / ".ci" / "run").read_text()
    assert ci.index("make test\n") < ci.index("make test-portable")


def test_a_leaf_borrows_the_spread_of_its_kind(tmp_path: Path) -> None:
    """Two runs can agree on one F1 by chance: the spread pooled over every F1 of the same kind
    (here 0.1, the 95th percentile of the ranges) widens its band, while a far value still
    fails; a boolean of a kind that flipped somewhere is unstable."""
    from equisae.envelope import envelope_from_runs

    ref, other = tmp_path / "reference", tmp_path / "other"
    runs = [{"f1": 0.5 + 0.1 * (i % 2), "seed": 0, "model": f"m{i}"} for i in range(10)]
    _write(ref, "06", {"runs": runs, "verdicts": [{"holds": True}, {"holds": False}]})
    moved = json.loads(json.dumps(runs))
    for row in moved[1:]:
        row["f1"] += 0.1  # every run but the first moves by 0.1
    _write(other, "06", {"runs": moved, "verdicts": [{"holds": False}, {"holds": False}]})
    envelope = envelope_from_runs("quick", ref, {"other": other})
    assert envelope["families"]["06:runs/f1"]["spread"] == pytest.approx(0.1)
    assert "06/runs/0/f1" not in envelope["leaves"]  # it did not move
    assert check.leaf_family("06/runs/0/f1") == "06:runs/f1"
    candidate = json.loads(json.dumps(runs))
    candidate[0]["f1"] += 0.2  # inside 2 x 0.1 + the F1 floor 0.03
    _write(
        tmp_path / "run", "06", {"runs": candidate, "verdicts": [{"holds": True}, {"holds": True}]}
    )
    report = check.compare_results(ref, tmp_path / "run")
    assert report.ok, report.format_table()
    # verdict 0 flipped in the other run; verdict 1 did not, but its kind did
    assert {leaf.path for leaf in report.unstable_leaves} == {
        "06/verdicts/0/holds",
        "06/verdicts/1/holds",
    }
    candidate[0]["f1"] = 0.5 + 0.3  # beyond 0.23
    _write(
        tmp_path / "run", "06", {"runs": candidate, "verdicts": [{"holds": True}, {"holds": True}]}
    )
    assert [leaf.path for leaf in check.compare_results(ref, tmp_path / "run").failed_leaves] == [
        "06/runs/0/f1"
    ]


def test_cli_envelope_refuses_an_unknown_environment_before_running(capsys) -> None:
    from equisae import cli

    assert cli.main(["envelope", "--mode", "quick", "--env", "avx9"]) == 1
    err = capsys.readouterr().err
    assert "--env: unknown numeric environment 'avx9'" in err and "native" in err

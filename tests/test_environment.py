"""environment.yml (for conda users) lists the same dependencies as pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    return {Requirement(s).name: Requirement(s) for s in specs}


def _environment_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    specs = [s for s in pip_sections[0] if not s.startswith("-e")]
    return {Requirement(s).name: Requirement(s) for s in specs}


def test_same_packages() -> None:
    assert set(_environment_requirements()) == set(_pyproject_requirements())


def test_same_specifiers_except_pinned_torch() -> None:
    env, proj = _environment_requirements(), _pyproject_requirements()
    for name, req in proj.items():
        if name == "torch":
            continue
        assert env[name].specifier == req.specifier, name
        assert env[name].extras == req.extras, name


def test_pinned_torch_satisfies_the_project_range() -> None:
    pinned = _environment_requirements()["torch"]
    versions = [s.version for s in pinned.specifier if s.operator == "=="]
    assert versions == ["2.13.0"]
    assert _pyproject_requirements()["torch"].specifier.contains("2.13.0")


def test_environment_installs_the_package_itself() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section

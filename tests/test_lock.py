"""The test dependencies' lock (.ci/constraints.txt): the README's test command and .ci/run
install through it, and it pins every requirement of the package and its test extra at a
version that pyproject.toml's ranges allow (a lock the package refuses would break the
install, a requirement missing from it would float)."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / ".ci" / "constraints.txt"


def locked() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version = line.split("==")
        pins[canonicalize_name(name)] = Version(version)
    return pins


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(r) for r in listed]


def test_lock_pins_every_requirement_within_its_range():
    pins = locked()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, pyproject.toml asks {requirement}"
        )


def test_lock_form():
    """One `name==version` a line; torch without a local build tag, so the CPU wheel and the
    CUDA one both meet it; not the package itself."""
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=+\s]+", line) for line in lines)
    pins = locked()
    assert "pipeline" not in pins
    assert pins["torch"] == Version("2.13.0")


def test_ci_and_readme_install_through_the_lock():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    install = (
        "pip install -c .ci/constraints.txt torch==2.13.0 && "
        'pip install -c .ci/constraints.txt -e ".[test]" && ruff check .'
    )
    assert install in ci
    assert f"    {install} && python -m pytest\n" in readme
    assert "pip install -c .ci/constraints.txt -e . && pipeline quickstart" in readme

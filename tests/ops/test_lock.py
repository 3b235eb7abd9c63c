"""The dependency locks agree with pyproject.toml: every requirement is pinned, with hashes, to a
version its range admits, and the server's lock is the test lock's versions (see `.ci/lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """Name → (version, number of hashes) of each pinned requirement of a lock file."""
    found: dict[str, tuple[str, int]] = {}
    name = None
    for line in (ROOT / lock).read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match.group(1))
            found[name] = (match.group(2), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def requirements(extra: str | None) -> list[Requirement]:
    listed = PYPROJECT["project"]["dependencies"] + PYPROJECT["build-system"]["requires"]
    if extra:
        listed = listed + PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(r) for r in listed]


@pytest.mark.parametrize(("lock", "extra"), [("requirements.lock", None), ("requirements-dev.lock", "dev")])
def test_every_requirement_is_pinned_with_hashes_to_a_version_its_range_admits(lock: str, extra: str | None) -> None:
    locked = pins(lock)
    assert len(locked) > 20, f"{lock} is empty or unreadable"
    for requirement in requirements(extra):
        if requirement.marker and not requirement.marker.evaluate({"python_version": "3.11"}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {lock}: run .ci/lock"
        version, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {requirement}: run .ci/lock"
        )
    unhashed = [name for name, (_, hashes) in locked.items() if hashes == 0]
    assert not unhashed, f"{lock} pins {unhashed} without hashes"


def test_the_server_lock_takes_the_versions_of_the_test_lock() -> None:
    server, tests = pins("requirements.lock"), pins("requirements-dev.lock")
    differ = {
        name: (v, tests.get(name, ("absent",))[0]) for name, (v, _) in server.items() if tests.get(name, ("",))[0] != v
    }
    assert not differ, f"the locks disagree (server, tests): {differ}; run .ci/lock"

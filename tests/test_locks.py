"""The locks in requirements/ against pyproject.toml, and the venv .ci/setup built against its lock."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCKS = ("cpu.txt", "cuda.txt")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CUDA_ONLY = re.compile(r"nvidia-|cuda-|triton$")  # what PyPI's CUDA torch adds on Linux


def pins(lock: str, environment: dict[str, str] | None = None) -> dict[str, str]:
    """Package -> pinned version, for the lines of `requirements/<lock>` whose markers hold in `environment`
    (default: this interpreter's)."""
    env = default_environment() | (environment or {})
    result = {}
    for line in (REPO / "requirements" / lock).read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(env):
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            result[canonicalize_name(requirement.name)] = spec.version
    return result


def declared() -> list[Requirement]:
    """Every dependency pyproject.toml declares: the main ones and every extra's."""
    project = PYPROJECT["project"]
    lines = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return [Requirement(line) for line in lines]


LINUX_311 = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
             "python_version": "3.11", "python_full_version": "3.11.0"}
MACOS_313 = {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
             "python_version": "3.13", "python_full_version": "3.13.0"}


@pytest.mark.parametrize("lock", LOCKS)
@pytest.mark.parametrize("environment", [LINUX_311, MACOS_313], ids=["linux-py311", "macos-py313"])
def test_each_lock_pins_a_version_pyproject_allows_for_every_declared_dependency(lock, environment):
    """Fails when pyproject.toml changed and the locks were not regenerated (bash requirements/lock.sh)."""
    locked = pins(lock, environment)
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock}: {requirement} is not locked; run bash requirements/lock.sh"
        version = locked[name].split("+")[0]  # 2.13.0+cpu is a build of 2.13.0
        assert requirement.specifier.contains(version, prereleases=True), f"{lock}: {name}=={locked[name]} vs {requirement}"


def test_the_locks_differ_only_in_torchs_build():
    cpu, cuda = pins("cpu.txt", LINUX_311), pins("cuda.txt", LINUX_311)
    assert cpu["torch"] == cuda["torch"] + "+cpu"
    assert {k: v for k, v in cuda.items() if not CUDA_ONLY.match(k) and k != "torch"} == \
        {k: v for k, v in cpu.items() if k != "torch"}
    assert not any(CUDA_ONLY.match(name) for name in cpu)  # the CPU lock brings no CUDA runtime
    # macOS has no +cpu build: both locks take PyPI's CPU-only wheel there.
    assert pins("cpu.txt", MACOS_313)["torch"] == pins("cuda.txt", MACOS_313)["torch"] == cuda["torch"]


def test_this_venv_holds_exactly_the_cpu_lock():
    """What .ci/setup built: every package of requirements/cpu.txt at its pinned version."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("checks the .venv that .ci/setup builds")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins("cpu.txt").items()
             if installed.get(name) != version}
    assert not wrong, f"locked vs installed: {wrong}; run bash .ci/setup"

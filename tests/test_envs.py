"""The conda environment the rules use pins versions that satisfy pyproject.toml's ranges."""

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}


def _env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for line in pip:
        if line.startswith("-e"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line)
        assert m, f"{path.name}: {line!r} is not pinned with =="
        pins[m.group(1).lower()] = m.group(3)
    return pins


def test_every_env_pins_exactly_the_pyproject_dependencies_within_their_ranges():
    required = _pyproject_requirements()
    env_files = sorted((ROOT / "envs").glob("*.yaml"))
    assert env_files, "no conda environment files in envs/"
    for path in env_files:
        pins = _env_pins(path)
        assert set(pins) == set(required), (
            f"{path.name}: packages differ from pyproject.toml: "
            f"missing {sorted(set(required) - set(pins))}, extra {sorted(set(pins) - set(required))}"
        )
        for name, version in pins.items():
            assert required[name].specifier.contains(version, prereleases=True), (
                f"{path.name}: {name}=={version} is outside pyproject.toml's range {required[name].specifier}"
            )

"""The conda environment the rules use pins versions that satisfy pyproject.toml's ranges: the base
dependencies and the extras the paper grid (config.yaml) uses."""

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _paper_grid_extras() -> list[str]:
    """The optional dependencies config.yaml's settings need in every job's environment."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    extras = []
    if str((config.get("compare") or {}).get("embedding_model", "none")).lower() != "none":
        extras.append("embeddings")  # kdgrid compare loads a sentence-transformers model
    return extras


def _pyproject_requirements(extras=()) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in lines}


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


def test_the_paper_grid_needs_the_embeddings_extra():
    assert _paper_grid_extras() == ["embeddings"]


def test_every_env_pins_exactly_the_pyproject_dependencies_within_their_ranges():
    required = _pyproject_requirements(_paper_grid_extras())
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

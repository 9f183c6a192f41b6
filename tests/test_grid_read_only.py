"""A built Grid is read-only all the way down (kdgrid.grid.frozen), and reads as it did: its sections
equal, in the same key order, to the plain dicts they come from, dumped to JSON alike."""

import copy
import dataclasses
import json
import pickle

import pytest

from kdgrid.grid import DEFAULT_KD, expand_grid, load_config
from kdgrid.grid.frozen import FrozenDict, FrozenList, derived, frozen
from workflow_support import ROOT

CONFIG = ROOT / "config/tiny.yaml"


@pytest.fixture(scope="module")
def grid():
    return expand_grid(load_config(CONFIG))


CHANGES = {
    "a kd setting": lambda g: g.kd.__setitem__("lmbda", 0.9),
    "a family's training setting": lambda g: g.families["math"].training.__setitem__("lr", 1.0),
    "a family's data setting": lambda g: g.families["math"].data.update(seed=3),
    "a section's key removed": lambda g: g.teacher_cache.pop("top_k"),
    "a section merged into": lambda g: g.evaluation.__ior__({"limit": 3}),
    "a seed added": lambda g: g.seeds.append(7),
    "a teacher's student added": lambda g: g.pairs["tiny-m"].append("tiny-l"),
    "a model added": lambda g: g.models.setdefault("x", None),
    "a block's cells replaced": lambda g: g.block_cells.clear(),
    "the config changed deep down": lambda g: g.config["blocks"][0]["methods"].insert(0, "fkl"),
    "the SFT runs cleared": lambda g: g.sft_runs.clear(),
    "the SFT runs sorted": lambda g: g.sft_runs.sort(key=str),
    "a family's models changed": lambda g: g.models_of_family["math"].__setitem__(0, "x"),
    "an evaluation removed": lambda g: g.evaluations_by_ckpt.popitem(),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_every_part_of_a_grid_refuses_a_change(grid, change):
    before = json.dumps([grid.config, grid.kd, grid.families["math"].training, [r.id for r in grid.sft_runs]])
    with pytest.raises(TypeError, match="a grid is read-only"):
        change(grid)
    assert json.dumps([grid.config, grid.kd, grid.families["math"].training, [r.id for r in grid.sft_runs]]) == before


def test_a_derived_value_is_neither_reassigned_nor_cleared(grid):
    runs = grid.sft_runs
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.sft_runs = []
    with pytest.raises(dataclasses.FrozenInstanceError):
        del grid.sft_runs
    with pytest.raises(AttributeError, match="Grid.sft_runs is derived"):
        type(grid).sft_runs.__set__(grid, [])
    vars(grid)["sft_runs"] = []  # what replaced a functools.cached_property's value
    assert grid.sft_runs is runs and len(runs) == 8
    assert isinstance(type(grid).__dict__["sft_runs"], derived)


def test_a_grid_reads_as_the_plain_values_it_was_built_from(grid):
    config = load_config(CONFIG)
    assert grid.config == config and list(grid.config) == list(config)
    assert json.dumps(grid.config) == json.dumps(config)  # key order included
    assert grid.kd == {**DEFAULT_KD, **config["kd"]} and list(grid.kd) == list(DEFAULT_KD)
    assert grid.seeds == [1] and grid.pairs == config["pairs"] and grid.hub_models == []
    assert isinstance(grid.kd, dict) and isinstance(grid.seeds, list)
    assert json.loads(grid.aggregate_params().grid_config) == {k: v for k, v in config.items() if k != "disk"}
    assert grid.families["math"].training["lr"] == config["families"]["math"]["training"]["lr"]
    assert {**grid.kd, "lmbda": 0.9}["lmbda"] == 0.9 and dict(grid.kd) | {"x": 1} == {**grid.kd, "x": 1}


def test_a_changed_copy_is_a_new_grid_with_its_own_derived_values(grid):
    off = dataclasses.replace(grid, teacher_cache={**grid.teacher_cache, "enabled": False})
    assert len(grid.teacher_outputs) == 5 and off.teacher_outputs == []
    assert isinstance(off.teacher_cache, FrozenDict) and grid.teacher_cache["enabled"] is True
    assert copy.deepcopy(grid) == grid and pickle.loads(pickle.dumps(grid)) == grid


def test_frozen_values_equal_and_dump_as_plain_ones_and_copy_to_plain_ones():
    plain = {"b": [1, {"c": (2, [3])}], "a": None}
    value = frozen(plain)
    assert value == plain and list(value) == ["b", "a"] and json.dumps(value) == json.dumps(plain)
    assert isinstance(value["b"], FrozenList) and isinstance(value["b"][1], FrozenDict)
    assert isinstance(value["b"][1]["c"][1], FrozenList)  # through tuples too
    assert frozen(value) is value and copy.deepcopy(value) == plain and pickle.loads(pickle.dumps(value)) == plain
    mine = dict(value)
    mine["a"] = 1
    assert value["a"] is None and type(value.copy()) is dict and type(list(value["b"])) is list
    with pytest.raises(TypeError, match="this list of it cannot be changed"):
        value["b"] += [4]
    assert value == plain

"""A grid in words (kdgrid.grid_summary): the hub models' disk, one function for the workflow's line before
its job table and for `kdgrid grid summary`'s table."""

import json

from kdgrid.cli import main
from kdgrid.grid import expand_grid, load_config
from kdgrid.grid_summary import hub_disk
from kdgrid.hub import FETCH_RECORD
from workflow_support import ROOT


def paper_grid(models_dir):
    config = load_config(ROOT / "config.yaml")
    config["models_dir"] = str(models_dir)
    return expand_grid(config)


def fetched(models_dir, name, nbytes):
    (models_dir / name).mkdir(parents=True)
    (models_dir / name / FETCH_RECORD).write_text(json.dumps({"hub_id": name, "bytes": nbytes}))


def test_before_any_fetch_one_line_estimates_every_hub_model(tmp_path):
    grid = paper_grid(tmp_path)
    line = f"8 hub model(s) to fetch into {tmp_path}/: about 76 GB (estimated from size_b at 2 bytes per parameter)"
    assert hub_disk(grid) == [line]
    table = hub_disk(grid, per_model=True)
    assert table[0] == "hub models (fetch_model):" and table[-1] == "  " + hub_disk(grid)[0]
    rows = [line.split() for line in table[1:-1]]
    assert [row[0] for row in rows] == list(grid.hub_models)
    assert ["Qwen2.5-7B", "14", "GB", "to", "fetch"] in rows  # size_b 7 x 2 bytes


def test_fetched_models_are_measured_and_counted_apart(tmp_path):
    fetched(tmp_path, "Qwen2.5-7B", 15_300_000_000)
    grid = paper_grid(tmp_path)
    line = hub_disk(grid)[0]
    assert line.startswith(f"7 hub model(s) to fetch into {tmp_path}/: about 62 GB ")  # 76 GB less its 14
    assert line.endswith("; 1 fetched already: 15.3 GB")
    assert ["Qwen2.5-7B", "15.3", "GB", "fetched"] in [row.split() for row in hub_disk(grid, per_model=True)]


def test_once_every_model_is_fetched_the_workflow_says_nothing_and_the_summary_lists_them(tmp_path, capsys):
    grid = paper_grid(tmp_path)
    for name in grid.hub_models:
        fetched(tmp_path, name, 1_000_000_000)
    assert hub_disk(grid) == []
    table = hub_disk(grid, per_model=True)
    assert len(table) == 2 + len(grid.hub_models)
    assert table[-1] == f"  8 hub model(s) fetched into {tmp_path}/: 8 GB"
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(grid.config))  # YAML reads JSON
    assert main(["grid", "summary", "--config", str(config)]) == 0
    assert "\n".join(table) in capsys.readouterr().out


def test_a_grid_without_hub_models_has_no_disk_to_show():
    grid = expand_grid(load_config(ROOT / "config/tiny-ci.yaml"))
    assert hub_disk(grid) == [] and hub_disk(grid, per_model=True) == []

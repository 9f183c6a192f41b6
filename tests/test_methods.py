"""kdgrid.methods: the one registry of KD methods (the schema keeps no list of its own) agrees with the
losses and the KD defaults, and its one cache rule decides for the grid and for `kdgrid train` alike."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdgrid import losses
from kdgrid.errors import KdgridError
from kdgrid.grid import DEFAULT_KD, expand_grid, load_config
from kdgrid.methods import METHODS, REGISTRY, Method, cache_serves, get_method
from kdgrid.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def schema():
    return yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def test_the_registry_is_the_one_list_of_methods():
    # the schema takes any name where a method goes; kdgrid.grid checks it against the registry, so that a
    # new method is one registry entry (docs/architecture.md "Adding a KD method")
    method = schema()["$defs"]["method"]
    assert "enum" not in method and method["type"] == "string"
    max_loss_error = schema()["properties"]["teacher_cache"]["properties"]["max_loss_error"]
    assert max_loss_error["propertyNames"] == {"$ref": "#/$defs/method"}


@pytest.mark.parametrize("name", METHODS)
def test_each_loss_name_is_a_function_of_kdgrid_losses(name):
    entry = REGISTRY[name]
    if entry.loss is None:
        assert entry.teacher_signal == "responses" and name not in losses.LOSSES
        return
    fn = getattr(losses, entry.loss)
    assert callable(fn) and losses.LOSSES[name] is fn
    parameters = inspect.signature(fn).parameters
    for key in (*entry.loss_settings, "temperature"):
        assert key in parameters, (name, key)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_reads_kd_settings_only(name):
    entry = REGISTRY[name]
    assert set(entry.settings) <= set(DEFAULT_KD), (name, entry.settings)
    assert dict(entry.versions_agree_at).keys() <= set(entry.settings)


def test_losses_has_no_name_the_registry_does_not_have():
    assert set(losses.LOSSES) == {m.name for m in REGISTRY.values() if m.loss is not None}
    with pytest.raises(KdgridError, match="unknown KD method 'jsd'"):
        losses.kd_loss("jsd", *(None,) * 3)
    with pytest.raises(KdgridError, match="teacher's responses"):
        losses.kd_loss("seqkd", *(None,) * 3)


def test_the_registry_is_importable_without_torch():
    code = "import sys, kdgrid.methods, kdgrid.grid; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_an_inconsistent_entry_is_refused():
    with pytest.raises(ValueError, match="loss function exactly when it reads logits"):
        Method("x", "x", None, ())
    with pytest.raises(ValueError, match="loss_settings"):
        Method("x", "x", "tvd", ("kd_weight",), loss_settings=("skew",))
    with pytest.raises(ValueError, match="lmbda"):
        Method("x", "x", "tvd", ("kd_weight",), student_samples=True)
    with pytest.raises(ValueError, match="logits only"):
        Method("x", "x", None, (), teacher_signal="responses", max_loss_error=0.1)


# --- the cache rule: one function, the grid's and the trainer's ------------------------------------

BASE = {"enabled": True, "lmbda": 0.5, "noise_sigma": 0.0, "temperature": 1.0, "max_temperature": 1.0}


@pytest.mark.parametrize("change, serves", [
    ({}, True),
    ({"enabled": False}, False),
    ({"noise_sigma": 0.5}, False),
    ({"temperature": 2.0}, False),
    ({"temperature": 2.0, "max_temperature": 2.0}, True),
])
def test_cache_serves_an_off_policy_method_without_noise_up_to_max_temperature(change, serves):
    assert cache_serves("fkl", **{**BASE, **change}) is serves


def test_cache_serves_gkd_only_off_policy_and_never_seqkd():
    assert not cache_serves("gkd", **BASE)
    assert cache_serves("gkd", **{**BASE, "lmbda": 0.0})
    assert not cache_serves("seqkd", **{**BASE, "lmbda": 0.0})
    with pytest.raises(KdgridError, match="unknown KD method 'kld'"):
        cache_serves("kld", **BASE)


def test_the_grid_and_the_trainer_decide_alike():
    grid = expand_grid(load_config(ROOT / "config" / "tiny.yaml"))
    assert any(grid.uses_cache(c) for c in grid.cells) and not all(grid.uses_cache(c) for c in grid.cells)
    for cell in grid.cells:
        args = grid.distill_args(cell)
        cfg = TrainConfig(mode="distill", model="m", data="d", out="o", method=cell.method, teacher="t",
                          teacher_cache="cache.pt" if "--teacher-cache" in args else None,
                          temperature=cell.temperature, noise_sigma=cell.noise_sigma, lmbda=grid.kd["lmbda"])
        assert cfg.can_use_cache is grid.uses_cache(cell), cell.id
        if grid.uses_cache(cell):
            assert cfg.cache_tolerance == float(args[args.index("--cache-max-loss-error") + 1])


def test_max_loss_error_names_only_methods_a_cache_serves():
    config = load_config(ROOT / "config" / "tiny.yaml")
    config["teacher_cache"] = {**(config.get("teacher_cache") or {}), "max_loss_error": {"seqkd": 0.1}}
    with pytest.raises(KdgridError, match="teacher_cache.max_loss_error.seqkd: no teacher cache serves seqkd"):
        expand_grid(config)
    config["teacher_cache"]["max_loss_error"] = {"kld": 0.1}
    with pytest.raises(KdgridError, match="teacher_cache.max_loss_error: unknown method 'kld'"):
        expand_grid(config)


def test_loss_kwargs_are_the_registry_loss_settings():
    cfg = TrainConfig(mode="distill", model="m", data="d", out="o", method="skew_kl", teacher="t", skew=0.3,
                      beta=0.2, temperature=2.0)
    assert cfg.loss_kwargs == {"temperature": 2.0, "skew": 0.3}
    cfg.method = "gkd"
    assert cfg.loss_kwargs == {"temperature": 2.0, "beta": 0.2}
    cfg.method = "tvd"
    assert cfg.loss_kwargs == {"temperature": 2.0}


def test_get_method_names_the_known_methods():
    assert get_method("tvd") is REGISTRY["tvd"]
    with pytest.raises(KdgridError, match=f"known KD methods: {', '.join(sorted(METHODS))}$"):
        get_method("kld")


@pytest.mark.parametrize("max_loss_error, named", [
    ({"tvd": 0.01, "rkl": 0.1}, None),
    ({"kld": 0.01}, "teacher_cache.max_loss_error: unknown method 'kld'"),  # the grid: the registry's names
    ({"tvd": -1}, "['teacher_cache']['max_loss_error']['tvd']"),  # the schema: a tolerance is >= 0
])
def test_the_schema_and_the_grid_check_max_loss_error(max_loss_error, named):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = load_config(ROOT / "config" / "tiny.yaml")
    config["teacher_cache"] = {**(config.get("teacher_cache") or {}), "max_loss_error": max_loss_error}

    def as_the_snakefile_does():
        validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
        expand_grid(config)

    if named is None:
        as_the_snakefile_does()
    else:
        with pytest.raises((WorkflowError, KdgridError)) as e:
            as_the_snakefile_does()
        assert named in str(e.value) + "".join(str(arg) for arg in e.value.args)


def test_the_loss_version_flag_only_where_the_versions_differ():
    gkd = REGISTRY["gkd"]
    assert gkd.loss_version_flag({"beta": 0.5}) == []
    assert gkd.loss_version_flag({"beta": 0.1}) == ["--loss-version", "2"]
    assert REGISTRY["fkl"].loss_version_flag({"beta": 0.1}) == []
    changed_everywhere = Method("x", "x", "tvd", ("kd_weight",), loss_version=3)
    assert changed_everywhere.loss_version_flag({"kd_weight": 1.0}) == ["--loss-version", "3"]


def test_the_registry_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        REGISTRY["x"] = REGISTRY["tvd"]


def test_no_code_outside_the_registry_names_a_method():
    # A method is one registry entry plus its loss function: the grid, the rules, the commands and the
    # figures ask the registry, so no other module holds a method's name as a value (comments may).
    allowed = {"methods.py", "losses.py", "paper_import.py"}  # paper_import: the paper tables' labels
    files = [p for p in (ROOT / "src/kdgrid").rglob("*.py") if p.name not in allowed]
    files += [*(ROOT / "workflow").rglob("*.smk"), ROOT / "Snakefile"]
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [f"{path.relative_to(ROOT)}:{number}: {m}" for m in METHODS
                      if f'"{m}"' in code or f"'{m}'" in code]
    assert not found, found

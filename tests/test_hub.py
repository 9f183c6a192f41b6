"""Hub models (kdgrid.hub, `kdgrid models fetch`, the grid's hub-model decisions), without network: the
fetch runs against a stand-in hub on 127.0.0.1 (tests/hub_stand_in.py) serving a tiny model."""

import json
import os
import subprocess
import sys

import pytest

from hub_stand_in import TOKEN, HubStandIn
from kdgrid.cli import main
from kdgrid.errors import KdgridError
from kdgrid.grid import expand_grid, load_config
from kdgrid.hub import FETCH_RECORD, LOCK_NAME, fetch_model, read_lock, revisions_of, write_revisions
from workflow_support import ROOT

HUB_ID = "someorg/model-kdgrid-never-heard-of"
OTHER_COMMIT = "b" * 40


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from kdgrid.tiny_models import materialise

    return materialise("tiny-xs", tmp_path_factory.mktemp("served") / "tiny-xs")


@pytest.fixture
def hub(tiny_folder, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("kdgrid.hub._token", lambda: os.environ.get("HF_TOKEN"))  # no token file of this machine
    # Online, as the fetch_model rule runs (HF_HUB_OFFLINE=0), whatever other test modules set at import.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with HubStandIn() as stand_in:
        stand_in.commit = stand_in.serve(HUB_ID, tiny_folder)
        yield stand_in


def fetch(hub, models_dir, name="new-model", **kwargs):
    return fetch_model(name, HUB_ID, models_dir / name, lock_file=models_dir / LOCK_NAME, endpoint=hub.url, **kwargs)


def leftovers(models_dir):
    return sorted(p.name for p in models_dir.iterdir() if p.name not in (LOCK_NAME, f".{LOCK_NAME}.flock"))


def test_first_fetch_downloads_what_a_causal_lm_needs_and_locks_the_commit(hub, tiny_folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (tiny_folder / "pytorch_model.bin").write_bytes(b"a second copy of the weights")
    (tiny_folder / "original").mkdir(exist_ok=True)
    (tiny_folder / "original" / "consolidated.pth").write_bytes(b"and a third")
    try:
        commit = hub.serve(HUB_ID, tiny_folder)
        record = fetch(hub, tmp_path)
    finally:
        (tiny_folder / "pytorch_model.bin").unlink()
        (tiny_folder / "original" / "consolidated.pth").unlink()
        (tiny_folder / "original").rmdir()
    folder = tmp_path / "new-model"
    assert record["revision"] == commit and record["hub_id"] == HUB_ID and not record["pinned"]
    assert set(record["files"]) == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                    "tokenizer_config.json"}
    assert sorted(os.listdir(folder)) == sorted([*record["files"], FETCH_RECORD])  # no .bin, no original/, no .cache
    assert read_lock(tmp_path / LOCK_NAME) == {HUB_ID: commit}
    assert revisions_of(folder) == {"model_revision": commit, "teacher_revision": None}
    assert leftovers(tmp_path) == ["new-model"]
    AutoModelForCausalLM.from_pretrained(folder)
    AutoTokenizer.from_pretrained(folder)


def test_a_later_fetch_that_resolves_another_commit_fails_and_leaves_no_folder(hub, tiny_folder, tmp_path):
    first = fetch(hub, tmp_path)["revision"]
    hub.serve(HUB_ID, tiny_folder, commit=OTHER_COMMIT)  # the hub's main branch moved on
    with pytest.raises(KdgridError) as e:
        fetch(hub, tmp_path, name="again")
    message = str(e.value)
    for text in ("again", HUB_ID, first, OTHER_COMMIT, f"models.again.revision: {first}", "delete"):
        assert text in message, (text, message)
    assert leftovers(tmp_path) == ["new-model"]  # no folder "again", no temporary one
    assert read_lock(tmp_path / LOCK_NAME) == {HUB_ID: first}
    # The same grid re-run with the model's folder removed (as Snakemake does before a fetch job) fails too.
    import shutil

    shutil.rmtree(tmp_path / "new-model")
    with pytest.raises(KdgridError, match=OTHER_COMMIT):
        fetch(hub, tmp_path)
    assert leftovers(tmp_path) == []


def test_a_pinned_revision_is_fetched_without_the_lock_and_a_wrong_one_fails(hub, tmp_path):
    record = fetch(hub, tmp_path, revision=hub.commit)
    assert record["revision"] == hub.commit and record["pinned"]
    assert not (tmp_path / LOCK_NAME).exists()
    requests = len(hub.requests)
    assert fetch(hub, tmp_path, revision=hub.commit) == record  # a folder at its pinned commit: no hub request
    assert len(hub.requests) == requests

    with pytest.raises(KdgridError) as e:
        fetch(hub, tmp_path, name="pinned-wrong", revision=OTHER_COMMIT)
    assert "pinned-wrong" in str(e.value) and OTHER_COMMIT in str(e.value) and "revision" in str(e.value)
    with pytest.raises(KdgridError, match="not a commit"):
        fetch(hub, tmp_path, name="pinned-branch", revision="main")
    assert leftovers(tmp_path) == ["new-model"]


@pytest.mark.parametrize("token, said", [(None, "no Hugging Face token was found"),
                                         ("hf_not_the_right_one", "refused the token")])
def test_a_gated_model_without_an_accepted_token_is_one_clear_error(hub, tiny_folder, tmp_path, monkeypatch,
                                                                    token, said):
    hub.serve(HUB_ID, tiny_folder, gated=True)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(KdgridError) as e:
        fetch(hub, tmp_path, name="gated")
    message = str(e.value)
    for text in ("gated", HUB_ID, said, "HF_TOKEN", "hf auth login"):
        assert text in message, (text, message)
    assert leftovers(tmp_path) == [] and not (tmp_path / LOCK_NAME).exists()

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert fetch(hub, tmp_path, name="gated")["revision"] == hub.commit


def test_unknown_models_unreachable_hubs_and_non_causal_lm_repositories_name_the_model(hub, tmp_path):
    with pytest.raises(KdgridError, match=r"model typo \(someorg/nope\): no such model .*models.typo.hub_id"):
        fetch_model("typo", "someorg/nope", tmp_path / "typo", lock_file=tmp_path / LOCK_NAME, endpoint=hub.url)
    with pytest.raises(KdgridError, match=r"model far .*cannot fetch from the hub at http://127.0.0.1:9 .*login node"):
        fetch_model("far", HUB_ID, tmp_path / "far", lock_file=tmp_path / LOCK_NAME, endpoint="http://127.0.0.1:9")
    weightless = tmp_path / "weightless-src"
    weightless.mkdir()
    (weightless / "config.json").write_text("{}")
    (weightless / "pytorch_model.bin").write_bytes(b"old format")
    hub.serve("someorg/weightless", weightless)
    with pytest.raises(KdgridError, match="no safetensors weights"):
        fetch_model("w", "someorg/weightless", tmp_path / "w", lock_file=tmp_path / LOCK_NAME, endpoint=hub.url)
    assert leftovers(tmp_path) == ["weightless-src"]


def test_kdgrid_models_fetch_is_what_the_rule_runs(hub, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}

    def kdgrid_fetch(out):
        return subprocess.run([sys.executable, "-m", "kdgrid", "models", "fetch", "m", "--hub-id", HUB_ID,
                               "--lock", str(tmp_path / LOCK_NAME), "--out", str(tmp_path / out)],
                              env=env, capture_output=True, text=True, timeout=120, check=False)

    run = kdgrid_fetch("m")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"fetched m ({HUB_ID}) at {hub.commit}" in run.stdout
    hub.serve(HUB_ID, tmp_path / "m", commit=OTHER_COMMIT)
    run = kdgrid_fetch("m2")
    assert run.returncode == 2 and OTHER_COMMIT in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "m2").exists()


def test_a_trained_checkpoint_records_the_revisions_it_came_from(hub, tmp_path):
    student = tmp_path / "student"
    fetch(hub, tmp_path, name="student")
    teacher_ckpt = tmp_path / "teacher-sft"
    teacher_ckpt.mkdir()
    write_revisions(teacher_ckpt, str(student))  # an SFT teacher trained from the fetched folder
    kd = tmp_path / "kd"
    kd.mkdir()
    assert write_revisions(kd, str(student), str(teacher_ckpt)) == {"model_revision": hub.commit,
                                                                    "teacher_revision": hub.commit}
    assert revisions_of(kd) == {"model_revision": hub.commit, "teacher_revision": hub.commit}
    assert revisions_of("resources/models/tiny-xs-not-here") == {"model_revision": None, "teacher_revision": None}


# ---------------------------------------------------------------------------------------------
# The grid's decisions about hub models


def paper_grid(**changes):
    config = load_config(ROOT / "config.yaml")
    for name, spec in changes.items():
        config["models"][name] = {**config["models"][name], **spec}
    return expand_grid(config)


def test_hub_models_are_loaded_from_models_dir_and_take_their_revision_as_a_param():
    grid = paper_grid(**{"Qwen2.5-7B": {"revision": "a" * 40}})
    assert grid.models_dir == "resources/hub" and len(grid.hub_models) == 8
    assert grid.model_ref("Qwen2.5-7B") == "resources/hub/Qwen2.5-7B"
    assert grid.model_files("Qwen2.5-7B") == ["resources/hub/Qwen2.5-7B"]
    assert grid.revision_param("Qwen2.5-7B") == "a" * 40 and grid.revision_param("Qwen2.5-3B") == "locked"
    assert grid.fetch_args("Qwen2.5-7B") == ["--hub-id", "Qwen/Qwen2.5-7B", "--lock", "resources/hub/revisions.lock.json",
                                             "--revision", "a" * 40]
    assert grid.job_counts()["fetch_model"] == 8
    disk = grid.fetch_disk()
    assert disk["fetched"] == {} and sum(disk["to_fetch"].values()) == 2 * 38e9  # 38B parameters in bf16


def test_path_and_tiny_models_have_no_fetch_and_a_bad_revision_is_named():
    grid = paper_grid(**{"Qwen2.5-0.5B": {"path": "/mirror/qwen-0.5b"}})
    assert grid.model_ref("Qwen2.5-0.5B") == "/mirror/qwen-0.5b" and "Qwen2.5-0.5B" not in grid.hub_models
    assert grid.revision_param("Qwen2.5-0.5B") == ""
    tiny = expand_grid(load_config(ROOT / "config/tiny-ci.yaml"))
    assert tiny.hub_models == [] and tiny.job_counts()["fetch_model"] == 0
    with pytest.raises(KdgridError, match=r"models.Qwen2.5-7B.revision: 'main'.*commit"):
        paper_grid(**{"Qwen2.5-7B": {"revision": "main"}})


def test_models_list_shows_a_configs_models_and_their_revisions(tmp_path, capsys):
    config = load_config(ROOT / "config.yaml")
    config["models_dir"] = str(tmp_path)
    config["models"]["Qwen2.5-7B"]["revision"] = "c" * 40
    (tmp_path / LOCK_NAME).write_text(json.dumps({"revisions": {"Qwen/Qwen2.5-3B": "d" * 40}}))
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["models", "list", "--config", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"pinned {'c' * 40}, not fetched" in out and f"locked {'d' * 40}" in out
    assert "hub: meta-llama/Llama-3.1-8B" in out and "tiny-xs" in out


def test_evaluation_takes_any_folder_or_hub_id_not_only_the_studys(tmp_path):
    from kdgrid.evaluation.runner import resolve_model

    assert resolve_model(HUB_ID) == HUB_ID  # a hub id no list in the package names
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m")) == str((tmp_path / "m").resolve())
    with pytest.raises(KdgridError, match="checkpoint folder not found, and not a hub id"):
        resolve_model(str(tmp_path / "results" / "math" / "missing"))

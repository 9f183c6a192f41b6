"""`kdgrid models` and `kdgrid data` through `kdgrid.cli.main`."""

import hashlib
import json
import os
import re

import pytest

from kdgrid.cli import main
from kdgrid.records import load_records
from kdgrid.tiny_models import tiny_param_count

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert str(tiny_param_count("tiny-l")) in out and str(tiny_param_count("tiny-xs")) in out
    assert "Qwen/Qwen2.5-14B" in out and "meta-llama/Llama-3.1-8B" in out


def test_models_materialise(tmp_path, capsys):
    assert main(["models", "materialise", "tiny-s", "--out", str(tmp_path / "m"), "--seed", "2"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["hidden_size"] == 64
    assert (tmp_path / "m" / "tokenizer.json").is_file()


@pytest.mark.parametrize("name, message", [
    ("Qwen2.5-7B", "unknown tiny model 'Qwen2.5-7B'; tiny models: tiny-l.*tiny-xs .*declared in config"),
    ("tiny-xxl", "unknown tiny model 'tiny-xxl'; tiny models: tiny-l.*tiny-xs"),
])
def test_models_materialise_errors(tmp_path, capsys, name, message):
    assert main(["models", "materialise", name, "--out", str(tmp_path / "m")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "syn_arith, syn_twostep, syn_choice" in out and "boolq, piqa, social_i_qa" in out
    assert "816657208af4db747803f87ba40a4c71383fed7a" in out


def test_data_prepare_synthetic(tmp_path):
    args = ["data", "prepare", "--family", "commonsense", "--source", "synthetic", "--seed", "3",
            "--n-train", "20", "--n-test", "6", "--tasks", "syn_bool,syn_option", "--limit-test", "5"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert len(load_records(tmp_path / "a" / "train.json")) == 20
    assert sorted(p.name for p in (tmp_path / "a" / "test").iterdir()) == ["syn_bool.json", "syn_option.json"]
    assert len(load_records(tmp_path / "a" / "test" / "syn_bool.json")) == 5
    for name in ("train.json", "test/syn_bool.json"):
        digests = {hashlib.sha256((tmp_path / d / name).read_bytes()).hexdigest() for d in "ab"}
        assert len(digests) == 1


def test_data_prepare_errors(tmp_path, capsys):
    assert main(["data", "prepare", "--family", "bio", "--source", "synthetic", "--out", str(tmp_path / "x")]) == 2
    assert "known familys: commonsense, math" in capsys.readouterr().err
    assert main(["data", "prepare", "--family", "math", "--source", "synthetic", "--tasks", "gsm8k",
                 "--out", str(tmp_path / "x")]) == 2
    assert "known synthetic math tasks: syn_arith, syn_choice, syn_twostep" in capsys.readouterr().err


def test_data_prepare_offline_points_to_local_mode(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDGRID_OFFLINE", "1")
    assert main(["data", "prepare", "--family", "math", "--source", "llm-adapters", "--download-dir",
                 str(tmp_path / "cache"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--local DIR" in err and "AGI-Edgerunners/LLM-Adapters" in err
    assert not (tmp_path / "x").exists()

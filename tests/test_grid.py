"""kdgrid.grid: the paper's grid expands to the study's job counts, blocks deduplicate, seeds multiply,
bad names are refused with the known ones listed, and each job's flags carry only what it depends on."""

import copy
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kdgrid.cli import main
from kdgrid.errors import KdgridError
from kdgrid.grid import METHODS, expand_grid, load_config

ROOT = Path(__file__).resolve().parents[1]


def with_changes(config, change):
    config = copy.deepcopy(config)
    change(config)
    return config


# --- the paper's grid -------------------------------------------------------------------------


def test_paper_grid_job_counts(paper):
    counts = paper.job_counts()
    assert counts["distill"] == 119
    assert counts["sft"] == 16  # 8 models x 2 families
    assert counts["evaluate"] == 151  # 16 base + 16 SFT + 119 KD students
    # every KD student against its teacher, plus each SFT student against each (teacher, signal) it has:
    # per family 0.5B: 5, 1.5B: 5, Qwen-3B: 3, 7B: 1, Llama-1B: 1, Llama-3B: 1
    assert counts["compare"] == 119 + 2 * 16
    assert counts["prepare_data"] == 2
    assert counts["materialise_model"] == 0
    assert counts["fetch_model"] == 8  # every hub model, once
    assert counts["teacher_responses"] == 0
    # per family, the teachers of fkl/rkl cells at temperature 1 (hotter cells run the teacher online):
    # SFT 3B, 7B, 14B and Llama-8B; base 3B and 7B
    assert counts["teacher_outputs"] == 12


def test_paper_blocks(paper):
    sizes = {name: len(cells) for name, cells in paper.block_cells.items()}
    assert sizes == {"main": 66, "temperature": 40, "task-unaware-teacher": 10, "noisy-teacher": 3}
    by = Counter((c.method, c.temperature, c.ablation) for c in paper.cells)
    assert by[("gkd", 1.0, "sft-teacher")] == 22
    assert by[("rkl", 5.0, "sft-teacher")] == 10
    assert by[("fkl", 1.0, "base-teacher")] == 10
    assert {c.ablation for c in paper.cells if c.noise_sigma > 0} == {"noise1", "noise2", "noise5"}
    assert all(c.family == "math" for c in paper.cells if c.noise_sigma > 0)


def test_cell_paths_follow_the_results_layout(paper):
    ids = {c.id for c in paper.cells}
    assert "math/Qwen2.5-3B__Qwen2.5-0.5B/fkl/t1/sft-teacher/seed42" in ids
    assert "commonsense/Qwen2.5-7B__Qwen2.5-3B/rkl/t5/sft-teacher/seed42" in ids
    assert "math/Qwen2.5-7B__Qwen2.5-1.5B/fkl/t1/base-teacher/seed42" in ids
    assert "math/Qwen2.5-3B__Qwen2.5-0.5B/fkl/t1/noise2/seed42" in ids
    evals = {e.ckpt for e in paper.evaluations}
    assert "math/base/Qwen2.5-14B" in evals and "commonsense/sft/Llama-3.2-1B/seed42" in evals
    assert len(evals) == len(paper.evaluations)  # each checkpoint once
    compares = {c.id for c in paper.comparisons}
    assert "math/sft/Qwen2.5-0.5B/seed42/compare/Qwen2.5-3B/base-teacher" in compares
    assert "math/Qwen2.5-3B__Qwen2.5-0.5B/fkl/t1/noise5/seed42/compare" in compares


def test_teachers_and_base_models_compared_against_the_right_checkpoint(paper):
    by_id = paper.comparisons_by_id
    base = by_id["math/Qwen2.5-7B__Qwen2.5-3B/fkl/t1/base-teacher/seed42/compare"]
    assert base.teacher_ckpt == "math/base/Qwen2.5-7B"
    noisy = by_id["math/Qwen2.5-3B__Qwen2.5-0.5B/fkl/t1/noise1/seed42/compare"]
    assert noisy.teacher_ckpt == "math/sft/Qwen2.5-3B/seed42"
    sft = by_id["commonsense/sft/Qwen2.5-1.5B/seed42/compare/Qwen2.5-14B/sft-teacher"]
    assert (sft.student_ckpt, sft.teacher_ckpt) == ("commonsense/sft/Qwen2.5-1.5B/seed42",
                                                    "commonsense/sft/Qwen2.5-14B/seed42")
    assert dict(sft.meta)["role"] == "sft" and dict(base.meta)["teacher_kind"] == "base"


# --- deduplication and seeds --------------------------------------------------------------------


def test_overlapping_blocks_run_each_cell_once(paper_config):
    def overlap(c):
        c["blocks"][1]["temperatures"] = [1, 2, 5]  # temperature 1 is also in "main"
        c["blocks"].append({"name": "again", "teachers": ["Qwen2.5-3B"], "methods": ["fkl", "gkd"]})

    grid = expand_grid(with_changes(paper_config, overlap))
    assert len(grid.block_cells["temperature"]) == 60
    assert len(grid.cells) == 119
    assert len({c.id for c in grid.cells}) == 119
    assert grid.job_counts()["evaluate"] == 151


def test_seeds_multiply_students_and_teachers_train_once(paper_config):
    grid = expand_grid(with_changes(paper_config, lambda c: c.update(seeds=[1, 2])))
    assert len(grid.cells) == 238
    # per family: six student models x two seeds, plus the teachers that are never students (14B,
    # Llama-8B) at teacher_seed 1; Qwen 3B and 7B are students too, their seed-1 run serves as teacher
    assert len(grid.sft_runs) == 2 * (6 * 2 + 2)
    assert grid.job_counts()["evaluate"] == 16 + 28 + 238
    for cell in grid.cells:
        if cell.teacher_kind == "sft":
            assert grid.teacher_ckpt(cell.family, cell.teacher, "sft").endswith("/seed1")

    other = expand_grid(with_changes(paper_config, lambda c: c.update(seeds=[1, 2], teacher_seed=7)))
    assert len(other.sft_runs) == 2 * (6 * 2 + 4)
    assert "math/sft/Qwen2.5-3B/seed7" in other.sft_runs_by_id


# --- bad names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("change, named", [
    (lambda c: c["pairs"].update({"Qwen2.5-3B": ["Qwen2.5-0.5b"]}), ["'Qwen2.5-0.5b'", "Qwen2.5-0.5B", "Llama-3.1-8B"]),
    (lambda c: c["blocks"][0].update(methods=["fkl", "kld"]), ["'kld'", *METHODS]),
    (lambda c: c["blocks"][1].update(teachers=["Qwen2.5-32B"]), ["'Qwen2.5-32B'", "Qwen2.5-14B"]),
    (lambda c: c["families"]["math"].update(tasks=["gsm8k", "gsm8K"]), ["'gsm8K'", "SVAMP"]),
    (lambda c: c["families"].update(code=c["families"]["math"]), ["'code'", "commonsense"]),
    (lambda c: c["evaluation"].update(max_new_token=10), ["'max_new_token'", "max_new_tokens"]),
    (lambda c: c["blocks"][0].update(teacher_kind="oracle"), ["'oracle'", "base", "sft"]),
])
def test_unknown_names_list_the_known_ones(paper_config, change, named):
    with pytest.raises(KdgridError) as e:
        expand_grid(with_changes(paper_config, change))
    for text in named:
        assert text in str(e.value)


def test_model_names_cannot_hold_the_pair_separator(paper_config):
    def rename(c):
        c["models"]["my__model"] = c["models"].pop("Qwen2.5-0.5B")

    with pytest.raises(KdgridError, match="my__model"):
        expand_grid(with_changes(paper_config, rename))


def test_noise_on_a_base_teacher_is_refused(paper_config):
    with pytest.raises(KdgridError, match="noise_sigmas"):
        expand_grid(with_changes(paper_config, lambda c: c["blocks"][2].update(noise_sigmas=[1])))


# --- what each job's flags depend on ------------------------------------------------------------


def test_only_the_cells_whose_loss_changed_name_its_version(paper, paper_config):
    # gkd's loss version 2 (kd.beta as in the GKD paper) equals version 1 at beta 0.5: the study's
    # cells keep their exact commands, so upgrading kdgrid re-runs none of them
    from kdgrid.methods import REGISTRY

    study = {c.id: paper.distill_args(c) for c in paper.cells}
    assert not any("--loss-version" in args for args in study.values())
    swept = expand_grid(with_changes(paper_config, lambda c: c["kd"].update(beta=0.1)))
    assert any(c.method == "gkd" for c in swept.cells)
    for cell in swept.cells:
        args = swept.distill_args(cell)
        if cell.method == "gkd":
            assert args[args.index("--loss-version") + 1] == str(REGISTRY["gkd"].loss_version) == "2"
            assert args[args.index("--beta") + 1] == "0.1"
        else:
            assert args == study[cell.id]


def test_distill_flags_carry_the_method_settings_it_reads(paper, paper_config):
    cells = paper.cells_by_id
    fkl = paper.distill_args(cells["math/Qwen2.5-3B__Qwen2.5-0.5B/fkl/t1/sft-teacher/seed42"])
    assert fkl[fkl.index("--teacher-cache") + 1] == "results/math/teacher_outputs/Qwen2.5-3B/sft/t1/topk64.pt"
    assert fkl[fkl.index("--cache-max-loss-error") + 1] == "0.005"
    rkl = paper.distill_args(cells["math/Qwen2.5-3B__Qwen2.5-0.5B/rkl/t1/sft-teacher/seed42"])
    assert rkl[rkl.index("--cache-max-loss-error") + 1] == "0.02"
    strict = expand_grid(with_changes(paper_config, lambda c: c["teacher_cache"].update(max_loss_error={"rkl": 0.001})))
    rkl = strict.distill_args(strict.cells_by_id["math/Qwen2.5-3B__Qwen2.5-0.5B/rkl/t1/sft-teacher/seed42"])
    assert rkl[rkl.index("--cache-max-loss-error") + 1] == "0.001"
    assert "--beta" not in fkl and "--noise-sigma" not in fkl
    gkd = paper.distill_args(cells["math/Qwen2.5-3B__Qwen2.5-0.5B/gkd/t1/sft-teacher/seed42"])
    assert "--teacher-cache" not in gkd  # on-policy (lmbda 0.5): runs the teacher
    assert gkd[gkd.index("--lmbda") + 1] == "0.5" and "--skew" not in gkd
    assert gkd[gkd.index("--teacher") + 1] == "results/math/sft/Qwen2.5-3B/seed42/model"
    noisy = paper.distill_args(cells["math/Qwen2.5-3B__Qwen2.5-0.5B/fkl/t1/noise5/seed42"])
    assert noisy[noisy.index("--noise-sigma") + 1] == "5" and "--teacher-cache" not in noisy
    base = paper.distill_args(cells["math/Qwen2.5-7B__Qwen2.5-1.5B/fkl/t1/base-teacher/seed42"])
    assert base[base.index("--teacher") + 1] == "resources/hub/Qwen2.5-7B"  # the fetched folder (fetch_model)
    lora = paper.training_args("math")
    assert lora[lora.index("--lora-r") + 1] == "8" and lora[lora.index("--epochs") + 1] == "4"
    assert base[base.index("--teacher-cache") + 1].endswith("teacher_outputs/Qwen2.5-7B/base/t1/topk64.pt")
    hot_id = "commonsense/Qwen2.5-7B__Qwen2.5-3B/rkl/t5/sft-teacher/seed42"
    hot = paper.distill_args(cells[hot_id])
    assert "--teacher-cache" not in hot  # above teacher_cache.max_temperature: runs the teacher
    assert hot[hot.index("--teacher") + 1] == "results/commonsense/sft/Qwen2.5-7B/seed42/model"
    warm = expand_grid(with_changes(paper_config, lambda c: c["teacher_cache"].update(max_temperature=5)))
    hot = warm.distill_args(warm.cells_by_id[hot_id])
    assert hot[hot.index("--teacher-cache") + 1].endswith("teacher_outputs/Qwen2.5-7B/sft/t5/topk64.pt")

    off = expand_grid(with_changes(paper_config, lambda c: c["teacher_cache"].update(enabled=False)))
    assert not any("--teacher-cache" in off.distill_args(c) for c in off.cells)
    assert off.job_counts()["teacher_outputs"] == 0
    gkd0 = expand_grid(with_changes(paper_config, lambda c: c["kd"].update(lmbda=0)))
    assert gkd0.uses_cache(gkd0.cells_by_id["math/Qwen2.5-3B__Qwen2.5-0.5B/gkd/t1/sft-teacher/seed42"])


def test_a_setting_reaches_only_the_jobs_that_read_it(tiny):
    config = load_config(ROOT / "config" / "tiny.yaml")

    def distill_flags(grid):
        return {c.id: grid.distill_args(c) + grid.training_args(c.family) for c in grid.cells}

    before = distill_flags(tiny)
    skewed = expand_grid(with_changes(config, lambda c: c["kd"].update(skew=0.3)))
    changed = {i for i, flags in distill_flags(skewed).items() if flags != before[i]}
    assert changed == {c.id for c in tiny.cells if c.method == "skew_kl"} and changed

    def slower(c):
        c["families"]["commonsense"]["training"] = {**c["families"]["commonsense"]["training"], "lr": 1e-3}

    slow = expand_grid(with_changes(config, slower))
    changed = {i for i, flags in distill_flags(slow).items() if flags != before[i]}
    assert changed == {c.id for c in tiny.cells if c.family == "commonsense"} and changed
    assert slow.training_args("math") == tiny.training_args("math")

    def lora_rank(c):  # the tiny grid fine-tunes fully: LoRA settings are not read
        c["families"]["math"]["training"] = {**c["families"]["math"]["training"], "lora_r": 4}

    assert distill_flags(expand_grid(with_changes(config, lora_rank))) == before

    shorter = expand_grid(with_changes(config, lambda c: c["evaluation"].update(max_new_tokens=8)))
    assert distill_flags(shorter) == before
    assert shorter.evaluation_args() != tiny.evaluation_args()


def test_one_teacher_output_cache_per_teacher_signal_and_temperature(paper, tiny):
    caches = Counter((t.family, t.teacher, t.teacher_kind) for t in paper.teacher_outputs)
    assert caches[("math", "Qwen2.5-3B", "sft")] == 1  # temperature 1 only: max_temperature
    warm = expand_grid(with_changes(load_config(ROOT / "config.yaml"),
                                    lambda c: c["teacher_cache"].update(max_temperature=5)))
    assert Counter((t.family, t.teacher, t.teacher_kind) for t in warm.teacher_outputs)[
        ("math", "Qwen2.5-3B", "sft")] == 3
    assert caches[("math", "Qwen2.5-14B", "sft")] == 1
    assert caches[("commonsense", "Qwen2.5-7B", "base")] == 1
    assert len({t.path for t in paper.teacher_outputs}) == len(paper.teacher_outputs)
    seqkd = [c for c in tiny.cells if c.method == "seqkd"]
    assert seqkd and all(tiny.distill_data(c).endswith("teacher_responses/tiny-m/sft/train.json") for c in seqkd)
    assert all("--teacher" not in tiny.distill_args(c) for c in seqkd)


# --- the tiny grids -----------------------------------------------------------------------------


def test_tiny_grid_exercises_every_method_and_ablation(tiny):
    assert {c.method for c in tiny.cells} == set(METHODS)
    sweep = Counter((c.family, c.teacher, c.student, c.method) for c in tiny.cells if c.ablation == "sft-teacher")
    assert max(sweep.values()) >= 3  # temperatures 1, 2, 5 of one pair and method
    assert {c.ablation for c in tiny.cells} >= {"sft-teacher", "base-teacher", "noise1", "noise5"}
    assert set(tiny.tiny_models) == {"tiny-xs", "tiny-s", "tiny-m", "tiny-l"}
    assert sum(tiny.job_counts().values()) <= 135  # the demo's budget on two cores (measured: README)
    # the README and docs/workflow.md say how many jobs the demo runs: the grid's, plus the `all` target
    jobs = sum(tiny.job_counts().values()) + 1
    assert f"{jobs} Snakemake jobs" in (ROOT / "README.md").read_text()
    assert f"the embedded demo ({jobs} jobs)" in (ROOT / "docs/workflow.md").read_text()
    assert all(r.gpu == 0 and r.nproc == 1 and r.zero_stage == 0
               for r in map(tiny.resources_distill, tiny.cells))


def test_tiny_model_sizes_are_their_parameter_counts():
    from kdgrid.tiny_models import tiny_param_count

    for path in ("config/tiny.yaml", "config/tiny-ci.yaml"):
        for name, spec in load_config(ROOT / path)["models"].items():
            assert spec["size_b"] == pytest.approx(tiny_param_count(name) / 1e9, rel=1e-6), (path, name)


# --- teacher cost and the command ---------------------------------------------------------------


def test_teacher_cost_of_the_paper_grid(paper):
    math_run, cs_run = 9919 * 4, 15119 * 3  # examples x epochs of one training run
    math_cells, cs_cells = 33 + 20 + 5 + 3, 33 + 20 + 5
    # gkd (on-policy), noisy and temperature > 1 cells run the teacher
    online_math, online_cs = 11 + 3 + 20, 11 + 20
    cost = paper.teacher_cost()
    assert cost["without_cache"] == math_cells * math_run + cs_cells * cs_run
    assert cost["cache_passes"] == 6 * 9919 + 6 * 15119
    # a cell that may read the cache runs its teacher on its first optimizer step (micro 4 x accumulation 4)
    checks = 16 * (119 - 25 - 40)
    assert cost["check_passes"] == checks
    assert cost["with_cache"] == online_math * math_run + online_cs * cs_run + cost["cache_passes"] + checks
    assert cost["cached_cells"] == 119 - 25 - 40
    # if every rkl cell fails its check, it runs the teacher for its whole run
    rkl_math, rkl_cs = 11, 11  # the cached rkl cells per family (main block, temperature 1)
    assert cost["with_cache_biased_refused"] == cost["with_cache"] + (rkl_math * math_run + rkl_cs * cs_run) - 16 * 22
    # 64 ids x 6 bytes + row max + 1 + 4 normalisers + 64 samples x 6 bytes
    assert cost["cache_bytes_per_token"] == 64 * 6 + 4 + 4 * 5 + 64 * 6


def test_grid_command_prints_counts_and_costs(capsys):
    assert main(["grid", "summary", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    lines = {tuple(line.split()) for line in out.splitlines()}
    for row in [("main", "66"), ("temperature", "40"), ("distill", "119"), ("sft", "16"), ("evaluate", "151"),
                ("distinct", "cells", "119")]:
        assert row in lines, row
    rule_rows = out.split("jobs per rule:\n")[1].split("\n\n")[0].splitlines()
    assert len({len(row) for row in rule_rows}) == 1, rule_rows  # the counts in one column (fingerprint_folder too)
    assert main(["grid", "teacher-cost", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "5,050,942" in out and "2,906,143" in out and "792 bytes per token" in out
    assert main(["grid", "cells", "--config", str(ROOT / "config/tiny-ci.yaml")]) == 0
    assert capsys.readouterr().out.split() == ["math/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1",
                                               "math/tiny-m__tiny-xs/rkl/t1/sft-teacher/seed1",
                                               "commonsense/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1"]
    assert main(["grid", "summary", "--config", "/nonexistent/config.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_importing_the_grid_stays_light():
    code = ("import sys, kdgrid.grid, kdgrid.grid_summary, kdgrid.commands.grid; "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy', 'lm_eval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"



def test_summary_and_dry_run_say_which_cells_may_read_the_cache(capsys):
    from kdgrid.grid_summary import is_dry_run

    assert main(["grid", "summary", "--config", str(ROOT / "config.yaml")]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "fkl 32 cells (temperature 1): if |error| <= 0.50%" in lines
    assert "rkl 22 cells (temperature 1): if |error| <= 2.00%" in lines
    assert any(line.startswith("teacher cache (top-64 + 64 tail samples): 54 cells may read it") for line in lines)
    assert is_dry_run(["-n"]) and is_dry_run(["-np", "--cores", "1"]) and is_dry_run(["--dry-run"])
    assert not is_dry_run(["--profile", "profiles/tiny", "--cores", "2", "-p"])

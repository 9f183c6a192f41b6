"""`kdgrid cluster check` and the SLURM preflight (kdgrid.cluster) against fake sinfo/sacctmgr/scontrol."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kdgrid.cli import main as kdgrid
from kdgrid.cluster import (
    ClusterInfo,
    JobRequest,
    check,
    gpus_in_gres,
    grid_requests,
    parse_min_job_age,
    parse_sinfo,
    parse_time_limit,
    problems,
    read_profile,
    workflow_requests,
)
from kdgrid.errors import KdgridError

ROOT = Path(__file__).resolve().parents[1]

# sinfo -h -N -o "%P|%l|%a|%c|%m|%G|%N" of a site with a 4-GPU partition (default), an 8-GPU one with a
# one-day limit and a CPU partition
SINFO = """\
gpu*|2-00:00:00|up|32|256000|gpu:a100:4(S:0-1)|g001
gpu*|2-00:00:00|up|32|256000|gpu:a100:4(S:0-1)|g002
gpu-big|1-00:00:00|up|64|512000|gpu:h100:8(S:0-3),shard:16|h001
cpu|infinite|up|128|1024000|(null)|c001
"""


def cluster(**changes) -> ClusterInfo:
    partitions, default = parse_sinfo(SINFO)
    info = ClusterInfo(partitions, default, "alice", {"proj-a", "proj-b"}, min_job_age_s=300)
    for key, value in changes.items():
        setattr(info, key, value)
    return info


def job(partition="gpu", account="proj-a", gpus=1, cpus=8, mem_mb=16000, runtime_min=60, rule="distill"):
    return JobRequest(rule, "math/x__y/fkl/t1/sft-teacher/seed42", partition, account, gpus, cpus, mem_mb, runtime_min)


def test_sinfo_time_and_gres_parsing():
    assert parse_time_limit("2-00:00:00") == 2880
    assert parse_time_limit("1:30:00") == 90
    assert parse_time_limit("30:00") == 30
    assert parse_time_limit("45") == 45
    assert parse_time_limit("infinite") is None and parse_time_limit("UNLIMITED") is None
    assert gpus_in_gres("gpu:a100:4(S:0-1)") == 4
    assert gpus_in_gres("gpu:2,shard:8") == 2
    assert gpus_in_gres("(null)") == 0
    partitions, default = parse_sinfo(SINFO)
    assert default == "gpu"
    assert sorted(partitions) == ["cpu", "gpu", "gpu-big"]
    assert [n.gpus for n in partitions["gpu"].nodes] == [4, 4]
    assert partitions["gpu-big"].max_time_min == 1440 and partitions["cpu"].max_time_min is None
    assert parse_min_job_age("AuthType = auth/munge\nMinJobAge               = 300 sec\n") == 300
    with pytest.raises(KdgridError, match="sinfo: unexpected line"):
        parse_sinfo("gpu|up\n")


def test_fitting_jobs_pass_with_a_summary():
    summary = check([job(), job(gpus=4, cpus=32, mem_mb=200000), job(partition=None)], cluster())
    assert "3 jobs fit partition(s) gpu, gpu (default), account proj-a" in summary
    assert "asks for 4 GPUs, 32 CPUs, 200000 MB" in summary


def test_placeholders_are_caught_with_what_to_change_where():
    with pytest.raises(KdgridError) as raised:
        check([job(partition="my-gpu", account="my-account")], cluster(), "profiles/slurm/config.yaml")
    message = str(raised.value)
    assert "nothing was submitted" in message
    assert "slurm_account 'my-account' is not an account of user alice (yours: proj-a, proj-b)" in message
    assert "slurm_partition 'my-gpu' (rules distill) is not a partition of this cluster" in message
    assert "set slurm_partition in profiles/slurm/config.yaml" in message and "one of: cpu, gpu, gpu-big" in message


def test_too_many_gpus_for_a_node_names_the_job_and_the_settings():
    found = problems([job(gpus=8, cpus=64, rule="sft")], cluster())
    assert len(found) == 1
    assert "rule sft (math/x__y/fkl/t1/sft-teacher/seed42) needs 8 GPUs on one node" in found[0]
    assert "at most 4" in found[0] and "resources.max_gpus_per_job: 4" in found[0]
    assert problems([job(partition="gpu-big", gpus=8, cpus=64)], cluster()) == []


def test_time_limit_cpu_partition_memory_and_down_partition():
    found = problems([job(partition="gpu-big", runtime_min=2000)], cluster())
    assert found == [found[0]] and "asks for 2000 min; partition 'gpu-big' allows 1440 min" in found[0]
    assert "resources.max_runtime_min: 1440" in found[0]
    found = problems([job(partition="cpu")], cluster())
    assert len(found) == 1 and "has no GPUs" in found[0] and "resources: accelerator: cpu" in found[0]
    assert problems([job(partition="cpu", gpus=0, cpus=4, mem_mb=4000, runtime_min=5000)], cluster()) == []
    found = problems([job(mem_mb=300000)], cluster())
    assert len(found) == 1 and "no node of partition 'gpu' has that (at most 32 CPUs, 256000 MB)" in found[0]
    down = cluster()
    down.partitions["gpu"].up = False
    assert any("is not up" in p for p in problems([job()], down))


def test_no_accounting_skips_the_account_check_and_squeue_needs_min_job_age():
    assert problems([job(account="anything")], cluster(accounts=None)) == []
    short = cluster(min_job_age_s=60)
    assert problems([job()], short, status_command="sacct") == []
    found = problems([job()], short, status_command="squeue")
    assert len(found) == 1 and "MinJobAge=60 s" in found[0] and "slurm-status-command: sacct" in found[0]


def test_the_grids_largest_job_comes_from_the_resources_plan(paper):
    profile = read_profile(ROOT / "profiles" / "slurm")
    assert profile.default_resources["slurm_partition"] == "gpu"
    assert profile.default_resources["slurm_extra"] == "--signal=TERM@300"
    assert profile.status_command == "squeue"
    jobs = grid_requests(paper, profile)
    assert {j.rule for j in jobs} == {"sft", "distill", "evaluate", "teacher_outputs", "compare"}
    biggest = max(jobs, key=lambda j: j.gpus)
    assert biggest.gpus == 2 and biggest.cpus == 16  # a 14B teacher: 2 x 40 GB GPUs, 8 CPUs per GPU
    one_gpu_nodes, default = parse_sinfo(SINFO.replace("gpu:a100:4", "gpu:a100:1"))
    found = problems([j for j in jobs if j.rule != "compare"],
                     ClusterInfo(one_gpu_nodes, default, "alice", {"my-account"}, 300))
    assert any("needs 2 GPUs on one node" in p for p in found)


def test_workflow_requests_read_snakemakes_resources():
    jobs = workflow_requests([
        ("distill", {"family": "math"}, {"gpu": 2, "cpus_per_gpu": 8, "mem_mb": 40000, "runtime": 90,
                                         "slurm_partition": "gpu", "slurm_account": "proj-a"}, 16),
        ("compare", {}, {"gpu": 0, "mem_mb": 2000, "runtime": 30, "slurm_partition": "'gpu'"}, 2),
    ])
    assert jobs[0] == JobRequest("distill", "family=math", "gpu", "proj-a", 2, 16, 40000, 90)
    assert jobs[1] == JobRequest("compare", "compare", "gpu", None, 0, 2, 2000, 30)


def fake_slurm(bin_dir: Path, sinfo: str, accounts: str | None) -> None:
    bin_dir.mkdir()
    tools = {"sinfo": f"cat <<'EOF'\n{sinfo}EOF\n",
             "sacctmgr": f"printf '{accounts}'\n" if accounts is not None else "echo 'no slurmdbd' >&2; exit 1\n",
             "scontrol": "echo 'MinJobAge               = 300 sec'\n"}
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_kdgrid_cluster_check_catches_the_shipped_placeholders(tmp_path, monkeypatch, capsys):
    fake_slurm(tmp_path / "bin", SINFO.replace("gpu*", "a100*").replace("gpu-big", "h100"), "proj-a\\nproj-b\\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(ROOT)
    assert kdgrid(["cluster", "check"]) == 2
    err = capsys.readouterr().err
    assert "slurm_partition 'gpu'" in err and "one of: a100, cpu, h100" in err
    assert "slurm_account 'my-account' is not an account of user" in err

    profile = tmp_path / "profile.yaml"
    profile.write_text((ROOT / "profiles/slurm/config.yaml").read_text()
                       .replace('slurm_partition: "gpu"', 'slurm_partition: "a100"')
                       .replace('slurm_account: "my-account"', 'slurm_account: "proj-b"'))
    assert kdgrid(["cluster", "check", "--profile", str(profile)]) == 0
    assert "jobs fit partition(s) a100, account proj-b" in capsys.readouterr().out


def test_kdgrid_cluster_check_without_slurm_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(ROOT)
    assert kdgrid(["cluster", "check"]) == 2
    assert "sinfo did not answer" in capsys.readouterr().err


class PluginJob:
    """What the SLURM plugin reads of a Snakemake job: resources (attributes and .get) and threads."""

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def __init__(self, resources: dict, threads: int):
        self.resources = self.Resources(resources)
        self.threads = threads


def test_the_sbatch_line_of_a_multi_gpu_job_keeps_its_gpus_on_one_node(paper):
    """snakemake-executor-plugin-slurm's own sbatch builder, given the profile's default-resources and the
    plan of the paper grid's largest job (2 GPUs, ZeRO-3)."""
    submit_string = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    profile = read_profile(ROOT / "profiles" / "slurm")
    grid = paper
    cell = max(grid.cells, key=lambda c: grid.resources_distill(c).gpu)
    plan = grid.resources_distill(cell)
    job = PluginJob({**profile.default_resources, **plan.as_dict()}, plan.threads)
    call = submit_string.get_submit_command(job, {"run_uuid": "run", "slurm_logfile": "x.log", "comment_str": "c",
                                                  "account": " -A proj", "partition": " -p gpu", "workdir": "."})
    call += set_gres_string(job)
    assert plan.gpu == 2
    assert "--gpus=2" in call and "--nodes=1" in call and "--cpus-per-gpu=8" in call
    assert f"--mem {plan.mem_mb}" in call and f"-t {plan.runtime}" in call
    assert "--signal=TERM@300" in call


@pytest.mark.slow
def test_a_run_through_the_slurm_profile_checks_first_and_submits_nothing(tmp_path, monkeypatch):
    """The preflight at the start of `snakemake --profile profiles/slurm` (workflow/rules/preflight.smk),
    against fake SLURM tools: the shipped placeholders stop the run before any job, local ones included."""
    from workflow_support import copy_workflow, snakemake

    fake_slurm(tmp_path / "bin", SINFO, "proj-a\\n")
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\necho submitted >> \"$(dirname \"$0\")/submissions\"\n")
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    workdir = copy_workflow(tmp_path / "wf")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    run = snakemake(workdir, "--profile", "profiles/slurm", "--configfile", "config/tiny-ci.yaml", timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "the SLURM cluster does not fit this grid; nothing was submitted" in out, out[-3000:]
    assert "slurm_account 'my-account' is not an account of user" in out
    assert "slurm_partition 'gpu'" not in out  # the fake cluster has a gpu partition, and the CI grid's CPU jobs fit
    assert not (tmp_path / "bin" / "submissions").exists()
    assert not (workdir / "resources").exists()  # prepare_data and materialise_model (local rules) did not run

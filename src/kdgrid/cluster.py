"""Preflight of a SLURM run: do the partition, account, GPUs per node, memory and time limits of the
cluster fit the jobs the grid will submit? (`kdgrid cluster check`, and the start of every run through
profiles/slurm, before anything is submitted.)

The jobs' resources come from `kdgrid.resources_plan` (through the grid, or through the jobs Snakemake
is about to run), the partition and account from the profile's `default-resources`/`set-resources`, the
cluster's side from `sinfo`, `sacctmgr` and `scontrol show config`. Every problem found is reported in
one message that says what to change and where.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import KdgridError

PROFILE = "profiles/slurm/config.yaml"
# The SLURM executor plugin polls at most this many seconds apart (snakemake-executor-plugin-slurm 2.8).
MAX_STATUS_INTERVAL_S = 180


@dataclass(frozen=True)
class JobRequest:
    """What one job will ask SLURM for."""

    rule: str
    name: str  # the job, for messages (its cell or wildcards)
    partition: str | None  # None: the cluster's default partition
    account: str | None
    gpus: int
    cpus: int
    mem_mb: int
    runtime_min: int


@dataclass(frozen=True)
class Node:
    cpus: int
    mem_mb: int
    gpus: int


@dataclass
class Partition:
    name: str
    max_time_min: int | None  # None: no limit
    up: bool = True
    nodes: list[Node] = field(default_factory=list)

    def fitting_nodes(self, job: JobRequest) -> list[Node]:
        return [n for n in self.nodes if n.gpus >= job.gpus and n.cpus >= job.cpus and n.mem_mb >= job.mem_mb]


@dataclass
class ClusterInfo:
    partitions: dict[str, Partition]
    default_partition: str | None
    user: str
    accounts: set[str] | None  # None: no accounting (sacctmgr unavailable), not checked
    min_job_age_s: int | None = None


# --- reading the cluster --------------------------------------------------------------------------

SINFO_FORMAT = "%P|%l|%a|%c|%m|%G|%N"  # one line per node and partition (sinfo -N)


def parse_time_limit(text: str) -> int | None:
    """SLURM time ("infinite", "UNLIMITED", "D-HH:MM:SS", "HH:MM:SS", "MM:SS", "MM") in minutes."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = 0, parts[0], 0
    return days * 1440 + h * 60 + m + (1 if s else 0)


def gpus_in_gres(gres: str) -> int:
    """GPUs in a node's GRES string, e.g. "gpu:a100:4(S:0-1),shard:8" -> 4; "(null)" -> 0."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"^gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def parse_sinfo(text: str) -> tuple[dict[str, Partition], str | None]:
    """`sinfo -h -N -o SINFO_FORMAT` output -> partitions (with their nodes) and the default partition."""
    partitions: dict[str, Partition] = {}
    default = None
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) != 7:
            raise KdgridError(f"sinfo: unexpected line {line!r} (expected {SINFO_FORMAT})")
        name, limit, avail, cpus, mem, gres, _node = cols
        if name.endswith("*"):
            name = name[:-1]
            default = name
        part = partitions.setdefault(name, Partition(name, parse_time_limit(limit), avail.strip() == "up"))
        part.nodes.append(Node(cpus=int(cpus.rstrip("+")), mem_mb=int(mem.rstrip("+")), gpus=gpus_in_gres(gres)))
    return partitions, default


def parse_min_job_age(scontrol_config: str) -> int | None:
    m = re.search(r"^MinJobAge\s*=\s*(\d+)", scontrol_config, re.MULTILINE)
    return int(m.group(1)) if m else None


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_cluster() -> ClusterInfo:
    """The cluster this machine submits to, from sinfo, sacctmgr and scontrol."""
    sinfo = _run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT])
    if sinfo is None:
        raise KdgridError("sinfo did not answer: this machine cannot reach a SLURM cluster (run the check, and "
                          "snakemake --profile profiles/slurm, on a login node of the cluster)")
    partitions, default = parse_sinfo(sinfo)
    user = getpass.getuser()
    associations = _run(["sacctmgr", "-n", "-P", "list", "associations", f"user={user}", "format=account"])
    accounts = {a.strip() for a in associations.splitlines() if a.strip()} if associations is not None else None
    config = _run(["scontrol", "show", "config"])
    return ClusterInfo(partitions, default, user, accounts or None,
                       parse_min_job_age(config) if config is not None else None)


# --- what the jobs ask for --------------------------------------------------------------------------

def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _resource_map(value, where: str) -> dict:
    """A profile's resources, as a mapping or as a list of "key=value" strings."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        out = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep:
                raise KdgridError(f"{where}: {item!r} is not key=value")
            out[key.strip()] = _unquote(val.strip())
        return out
    raise KdgridError(f"{where}: expected a mapping or a list of key=value, got {value!r}")


@dataclass(frozen=True)
class ProfileSettings:
    path: str
    default_resources: dict
    set_resources: dict[str, dict]
    status_command: str | None

    def slurm_target(self, rule: str) -> tuple[str | None, str | None]:
        """(partition, account) a job of `rule` is submitted to."""
        res = {**self.default_resources, **self.set_resources.get(rule, {})}
        partition, account = res.get("slurm_partition"), res.get("slurm_account")
        return (str(partition) if partition else None), (str(account) if account else None)


def read_profile(path: str | Path = PROFILE) -> ProfileSettings:
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise KdgridError(f"{path}: no such profile file")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rules = data.get("set-resources") or {}
    if not isinstance(rules, dict):
        raise KdgridError(f"{path}: set-resources must map rule names to resources")
    return ProfileSettings(
        path=str(path),
        default_resources=_resource_map(data.get("default-resources"), f"{path}: default-resources"),
        set_resources={rule: _resource_map(v, f"{path}: set-resources.{rule}") for rule, v in rules.items()},
        status_command=data.get("slurm-status-command"),
    )


def _request(rule: str, name: str, res, profile: ProfileSettings) -> JobRequest:
    partition, account = profile.slurm_target(rule)
    cpus = res.gpu * res.cpus_per_gpu if res.gpu else res.threads
    return JobRequest(rule, name, partition, account, res.gpu, cpus, res.mem_mb, res.runtime)


def grid_requests(grid, profile: ProfileSettings) -> list[JobRequest]:
    """Every SLURM job of the grid (the local rules excepted), with its planned resources."""
    from .resources_plan import plan_light

    jobs = [_request("sft", run.id, grid.resources_sft(run), profile) for run in grid.sft_runs]
    jobs += [_request("distill", cell.id, grid.resources_distill(cell), profile) for cell in grid.cells]
    jobs += [_request("evaluate", ev.ckpt, grid.resources_inference(ev.model, ev.family, "evaluate"), profile)
             for ev in grid.evaluations]
    jobs += [_request("teacher_outputs", t.path, grid.resources_inference(t.teacher, t.family, "teacher_outputs"),
                      profile) for t in grid.teacher_outputs]
    jobs += [_request("teacher_responses", t.path,
                      grid.resources_inference(t.teacher, t.family, "teacher_responses"), profile)
             for t in grid.teacher_responses]
    light = plan_light(grid.resources)
    jobs += [_request("compare", c.id, light, profile) for c in grid.comparisons]
    return jobs


# --- the check --------------------------------------------------------------------------------------

def _largest(jobs: list[JobRequest]) -> JobRequest:
    return max(jobs, key=lambda j: (j.gpus, j.mem_mb, j.cpus, j.runtime_min))


def problems(jobs: list[JobRequest], cluster: ClusterInfo, profile: str = PROFILE,
             status_command: str | None = None) -> list[str]:
    """What does not fit, each with what to change where; [] when everything does."""
    found: list[str] = []
    where = f"{profile} (default-resources, or set-resources for one rule)"
    known = ", ".join(sorted(cluster.partitions)) or "none"

    for account in sorted({j.account for j in jobs if j.account}):
        if cluster.accounts is not None and account not in cluster.accounts:
            yours = ", ".join(sorted(cluster.accounts))
            found.append(f"slurm_account {account!r} is not an account of user {cluster.user} (yours: {yours}); "
                         f"set slurm_account in {where}, or remove the line if your site has no accounts")

    by_partition: dict[str | None, list[JobRequest]] = {}
    for job in jobs:
        by_partition.setdefault(job.partition, []).append(job)
    for name, group in by_partition.items():
        rules = ", ".join(sorted({j.rule for j in group}))
        part_name = name or cluster.default_partition
        if part_name is None:
            found.append(f"no slurm_partition is set for rule(s) {rules} and the cluster has no default partition; "
                         f"set slurm_partition in {where} to one of: {known}")
            continue
        part = cluster.partitions.get(part_name)
        if part is None:
            found.append(f"slurm_partition {part_name!r} (rules {rules}) is not a partition of this cluster; "
                         f"set slurm_partition in {where} to one of: {known}")
            continue
        if not part.up:
            found.append(f"partition {part_name!r} is not up (sinfo): choose another in {where}")
        found += _fit_problems(part, group, where)

    if status_command == "squeue" and cluster.min_job_age_s is not None \
            and cluster.min_job_age_s <= MAX_STATUS_INTERVAL_S:
        found.append(f"this cluster keeps a finished job in squeue for MinJobAge={cluster.min_job_age_s} s, less than "
                     f"the {MAX_STATUS_INTERVAL_S} s Snakemake may wait between status checks, so a finished job "
                     f"could go unseen; set slurm-status-command: sacct in {profile} (then a cancelled job is not "
                     f"retried: README, 'SLURM: when things go wrong')")
    return found


def _fit_problems(part: Partition, group: list[JobRequest], where: str) -> list[str]:
    found = []
    most_gpus = max(n.gpus for n in part.nodes)
    gpu_jobs = [j for j in group if j.gpus]
    if gpu_jobs and most_gpus == 0:
        found.append(f"partition {part.name!r} has no GPUs (no gres/gpu in sinfo) but {len(gpu_jobs)} jobs ask for "
                     f"them; to run on CPUs set `resources: accelerator: cpu` in config.yaml, otherwise choose a GPU "
                     f"partition in {where}")
    elif gpu_jobs and _largest(gpu_jobs).gpus > most_gpus:
        big = _largest(gpu_jobs)
        found.append(f"rule {big.rule} ({big.name}) needs {big.gpus} GPUs on one node; the nodes of partition "
                     f"{part.name!r} have at most {most_gpus}: set resources.max_gpus_per_job: {most_gpus} and "
                     f"resources.gpu_mem_gb (your GPUs' memory) in config.yaml, or send rule {big.rule} to a "
                     f"partition with bigger nodes in {where}")
    else:
        unfit = [j for j in group if not part.fitting_nodes(j)]
        if unfit:
            big = _largest(unfit)
            most_cpus = max(n.cpus for n in part.nodes)
            most_mem = max(n.mem_mb for n in part.nodes)
            found.append(f"rule {big.rule} ({big.name}) asks for {big.gpus} GPUs, {big.cpus} CPUs and {big.mem_mb} MB "
                         f"on one node; no node of partition {part.name!r} has that (at most {most_cpus} CPUs, "
                         f"{most_mem} MB): lower resources.cpus_per_gpu (or cpu_threads / cpu_mem_mb on CPU) in "
                         f"config.yaml, or choose a partition with bigger nodes in {where}")
    if part.max_time_min is not None:
        longest = max(group, key=lambda j: j.runtime_min)
        if longest.runtime_min > part.max_time_min:
            found.append(f"rule {longest.rule} ({longest.name}) asks for {longest.runtime_min} min; partition "
                         f"{part.name!r} allows {part.max_time_min} min: set resources.max_runtime_min: "
                         f"{part.max_time_min} in config.yaml (a job cut off at the limit saves a checkpoint and its "
                         f"retry resumes), or choose a partition with a longer limit in {where}")
    return found


def check(jobs: list[JobRequest], cluster: ClusterInfo, profile: str = PROFILE,
          status_command: str | None = None) -> str:
    """Raise one KdgridError listing every problem; return a one-line summary when there is none."""
    found = problems(jobs, cluster, profile, status_command)
    if found:
        raise KdgridError("the SLURM cluster does not fit this grid; nothing was submitted:\n  - "
                          + "\n  - ".join(found))
    if not jobs:
        return "cluster check: no SLURM jobs to run"
    big = _largest(jobs)
    parts = ", ".join(sorted({j.partition or f"{cluster.default_partition} (default)" for j in jobs}))
    accounts = ", ".join(sorted({j.account for j in jobs if j.account})) or "none given"
    return (f"cluster check: {len(jobs)} jobs fit partition(s) {parts}, account {accounts}; the largest, "
            f"{big.rule} {big.name}, asks for {big.gpus} GPUs, {big.cpus} CPUs, {big.mem_mb} MB, {big.runtime_min} min")


def workflow_requests(jobs, profile: str = PROFILE) -> list[JobRequest]:
    """Requests of the jobs Snakemake is about to submit: (rule, wildcards, resources, threads) each,
    the resources as Snakemake evaluated them (the rule's, the profile's default- and set-resources)."""
    requests = []
    for rule, wildcards, res, threads in jobs:
        gpus = int(res.get("gpu") or 0)
        cpus = gpus * int(res.get("cpus_per_gpu") or 1) if gpus else int(res.get("cpus_per_task") or threads or 1)
        name = ",".join(f"{k}={v}" for k, v in wildcards.items()) or rule
        requests.append(JobRequest(rule, name, _unquote(res.get("slurm_partition")) or None,
                                   _unquote(res.get("slurm_account")) or None, gpus, cpus,
                                   int(res.get("mem_mb") or 0), int(res.get("runtime") or 0)))
    return requests


def check_before_submission(jobs, profile: str = PROFILE, status_command: str | None = None) -> None:
    """The start of a SLURM run (workflow/rules/preflight.smk): raise KdgridError when the cluster does not
    fit the jobs about to be submitted, print the summary otherwise."""
    print(check(workflow_requests(jobs, profile), read_cluster(), profile, status_command), flush=True)

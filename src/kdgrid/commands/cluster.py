"""`kdgrid cluster check`: does the SLURM cluster fit the grid? (kdgrid.cluster)

    kdgrid cluster check [--config F] [--profile DIR]
Reads the partition and account from the profile, the jobs' resources from the grid, the cluster from
sinfo, sacctmgr and scontrol; exits 2 with one message naming what to change where, 0 when it fits.
"""

from __future__ import annotations

HELP = "check the SLURM partition, account, GPUs per node and time limits against the grid's jobs"


def add_arguments(parser) -> None:
    parser.add_argument("view", choices=["check"], help="what to do")
    parser.add_argument("--config", default="config.yaml", help="the workflow config (default: config.yaml)")
    parser.add_argument("--profile", default="profiles/slurm", help="the SLURM profile (default: profiles/slurm)")


def run(args) -> int:
    from ..cluster import check, grid_requests, read_cluster, read_profile
    from ..grid import grid_of_file

    profile = read_profile(args.profile)
    jobs = grid_requests(grid_of_file(args.config), profile)
    print(check(jobs, read_cluster(), profile.path, profile.status_command))
    return 0

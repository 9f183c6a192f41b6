# Before a run through the SLURM executor submits anything (local rules included): do the partition,
# account, GPUs per node and time limits fit the jobs about to run? (kdgrid.cluster; also `kdgrid cluster check`)


def slurm_preflight():
    """Called by the Snakefile's onstart (Snakemake keeps one onstart handler)."""
    if workflow.executor_plugin is not None and workflow.executor_plugin.cli_prefix == "slurm":
        from kdgrid.cluster import check_before_submission

        check_before_submission(
            [
                (job.rule.name, job.wildcards_dict, dict(job.resources.items()), job.threads)
                for job in workflow.dag.needrun_jobs()
                if not job.is_local
            ],
            status_command=getattr(workflow.executor_settings, "status_command", None),
        )

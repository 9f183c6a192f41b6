# kdgrid: the knowledge-distillation grid of "On the Generalization vs Fidelity Paradox in Knowledge
# Distillation" as a Snakemake workflow. The grid is expanded by `kdgrid.grid` (workflow/rules/common.smk);
# each rule file under workflow/rules/ holds one stage and calls one `kdgrid` command.
#
#   snakemake -n                                   preview the paper grid (config.yaml)
#   snakemake --profile profiles/slurm             run it on a SLURM cluster
#   snakemake --profile profiles/tiny              the embedded tiny grid on CPU (config/tiny.yaml)
#   snakemake --report results/report.html         the report, once a run has finished

import os
import sys

from snakemake.utils import min_version, validate

from kdgrid.grid import check_config_files, load_config
from kdgrid.run_record import forget_run, record_run

min_version("9.0")


# A config given on the command line (--configfile, as profiles/tiny does) replaces config.yaml
# instead of being merged into it: two grids mixed would make a third one nobody asked for.
if not workflow.overwrite_configfiles:
    load_config("config.yaml")  # a YAML syntax error named with its file and line (Snakemake names neither)

    configfile: "config.yaml"


SCHEMA = "workflow/schemas/config.schema.yaml"
# Each config file re-read strictly (a key given twice is refused: Snakemake's loader keeps the last),
# then the config checked against the schema, one line naming the file, key and value (Snakemake's
# validate prints the whole schema and config); the same check as `kdgrid grid --config`.
check_config_files(config, workflow.configfiles, os.path.join(workflow.basedir, SCHEMA))
validate(config, SCHEMA)  # fills in the schema's defaults


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/fingerprint.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/preflight.smk"


from kdgrid.grid_summary import cache_conditions, is_dry_run

if workflow.is_main_process and is_dry_run(sys.argv[1:]):
    # which cells may read the teacher cache, and under what condition (decided in each distill job)
    print("\n".join(cache_conditions(GRID)), file=sys.stderr)


report: "workflow/report/workflow.rst"


# The run's host and pid, so that the next run can remove the locks this one leaves if it is killed
# (kdgrid.run_record; common.smk removes them only once this process is gone).
onstart:
    slurm_preflight()  # workflow/rules/preflight.smk: fails before anything is submitted
    record_run()


onsuccess:
    forget_run()


onerror:
    forget_run()


localrules:
    all,
    prepare_data,
    materialise_model,
    fetch_model,
    fingerprint_folder,
    aggregate,
    stats,
    plots,


rule all:
    input:
        GRID.final_targets(),
    default_target: True

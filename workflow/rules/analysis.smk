# The final joins: one table of every evaluation and comparison, the paper's hypothesis tests, its figures.


rule aggregate:
    input:
        **GRID.aggregate_inputs(),
    output:
        csv=report(out(TABLE_CSV), caption="../report/results_table.rst", category="Tables"),
        parquet=out(TABLE_PARQUET),
        cost=report(out(COST_CSV), caption="../report/cost_table.rst", category="Tables"),
        cost_jobs=out(COST_JOBS_CSV),
    params:
        # grid_config: the grid the cost ledger estimates (it reads benchmarks from <outdir>/benchmarks/<rule>/<job>.tsv)
        sizes=AGGREGATE.sizes,
        grid_config=AGGREGATE.grid_config,
    log:
        log_of("aggregate", "aggregate"),
    benchmark:
        benchmark_of("aggregate", "aggregate")
    conda:
        ENV
    shell:
        "kdgrid aggregate --scores {input.scores} --compare {input.compare} --records {input.records} --sizes {params.sizes}"
        " --out-csv {output.csv} --out-parquet {output.parquet}"
        " --out-cost {output.cost} --out-cost-jobs {output.cost_jobs} --grid-config {params.grid_config:q} > {log} 2>&1"


rule stats:
    input:
        table=out(TABLE_PARQUET),
        cost=out(COST_CSV),
        cost_jobs=out(COST_JOBS_CSV),
    output:
        csv=report(out(STATS_CSV), caption="../report/hypotheses.rst", category="Hypothesis tests"),
        md=report(out(STATS_MD), caption="../report/summary.rst", category="Hypothesis tests"),
    log:
        log_of("stats", "stats"),
    benchmark:
        benchmark_of("stats", "stats")
    conda:
        ENV
    shell:
        "kdgrid stats --table {input.table} --cost {input.cost} --cost-jobs {input.cost_jobs}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


# Each figure's caption is written by `kdgrid plots` beside it (it says when a figure had no data in this run).
rule plots:
    input:
        table=out(TABLE_PARQUET),
        cost=out(COST_CSV),
    output:
        **{
            f"{name}_png": report(
                out(PLOT_FILE.format(name=name, ext="png")),
                caption=os.path.abspath(out(PLOT_CAPTION.format(name=name))),
                category="Figures",
            )
            for name in PLOT_NAMES
        },
        **{f"{name}_pdf": out(PLOT_FILE.format(name=name, ext="pdf")) for name in PLOT_NAMES},
        **{f"{name}_caption": out(PLOT_CAPTION.format(name=name)) for name in PLOT_NAMES},
    params:
        out_dir=output_dir(),  # plots/: the figures, captions/ below it
    log:
        log_of("plots", "plots"),
    benchmark:
        benchmark_of("plots", "plots")
    conda:
        ENV
    shell:
        "kdgrid plots --table {input.table} --cost {input.cost} --out-dir {params.out_dir} > {log} 2>&1"

# The final joins: one table of every evaluation and comparison, the paper's hypothesis tests, its figures.


rule aggregate:
    input:
        scores=[eval_files(e.ckpt)["scores"] for e in GRID.evaluations],
        compare=[out(f"{c.id}.json") for c in GRID.comparisons],
        train_logs=[out(run.id, "train_log.jsonl") for run in GRID.sft_runs] + [out(c.id, "train_log.jsonl") for c in GRID.cells],
        records=[eval_files(e.ckpt)["records"] for e in GRID.evaluations],
    output:
        csv=report(out(TABLE_CSV), caption="../report/results_table.rst", category="Tables"),
        parquet=out(TABLE_PARQUET),
        cost=report(out(COST_CSV), caption="../report/cost_table.rst", category="Tables"),
        cost_jobs=out(COST_JOBS_CSV),
    params:
        sizes=flags(GRID.sizes()),
        # the grid the cost ledger estimates (benchmarks are read from <outdir>/benchmarks/<rule>/<job>.tsv)
        grid_config=json.dumps({k: v for k, v in config.items() if k != "disk"}, sort_keys=True, default=str),
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
                out(PLOTS_DIR, f"{name}.png"),
                caption=os.path.abspath(out(PLOTS_DIR, "captions", f"{name}.rst")),
                category="Figures",
            )
            for name in PLOT_NAMES
        },
        **{f"{name}_pdf": out(PLOTS_DIR, f"{name}.pdf") for name in PLOT_NAMES},
        **{f"{name}_caption": out(PLOTS_DIR, "captions", f"{name}.rst") for name in PLOT_NAMES},
    params:
        out_dir=lambda w, output: os.path.dirname(output.fig1_accuracy_png),
    log:
        log_of("plots", "plots"),
    benchmark:
        benchmark_of("plots", "plots")
    conda:
        ENV
    shell:
        "kdgrid plots --table {input.table} --cost {input.cost} --out-dir {params.out_dir} > {log} 2>&1"

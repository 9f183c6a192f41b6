# The final joins: one table of every evaluation and comparison, the paper's hypothesis tests, its figures.


rule aggregate:
    input:
        scores=[eval_files(e.ckpt)["scores"] for e in GRID.evaluations],
        compare=[out(f"{c.id}.json") for c in GRID.comparisons],
    output:
        csv=report(out(TABLE_CSV), caption="../report/results_table.rst", category="Tables"),
        parquet=out(TABLE_PARQUET),
    params:
        sizes=flags(GRID.sizes()),
    log:
        log_of("aggregate", "aggregate"),
    benchmark:
        benchmark_of("aggregate", "aggregate")
    conda:
        ENV
    shell:
        "kdgrid aggregate --scores {input.scores} --compare {input.compare} --sizes {params.sizes}"
        " --out-csv {output.csv} --out-parquet {output.parquet} > {log} 2>&1"


rule stats:
    input:
        table=out(TABLE_PARQUET),
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
        "kdgrid stats --table {input.table} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


# Each figure's caption is written by `kdgrid plots` beside it (it says when a figure had no data in this run).
rule plots:
    input:
        table=out(TABLE_PARQUET),
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
        "kdgrid plots --table {input.table} --out-dir {params.out_dir} > {log} 2>&1"

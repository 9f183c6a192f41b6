# Each family's training set (train.json) and test sets (test/<task>.json), synthetic or LLM-Adapters'.


rule prepare_data:
    output:
        train=out(DATA_DIR, "train.json"),
        test=directory(out(DATA_DIR, "test")),
    params:
        args=lambda w: flags(GRID.data_args(w.family)),
        out=lambda w, output: os.path.dirname(output.train),
        # what the data are made from: the tiny world's code, or the LLM-Adapters files' git blob ids
        made_from=lambda w: (TINY_WORLD if GRID.families[w.family].data["source"] == "synthetic"
                             else GRID.data_source_ids(w.family)),
    log:
        log_of("prepare_data", "{family}"),
    benchmark:
        benchmark_of("prepare_data", "{family}")
    conda:
        ENV
    shell:
        "kdgrid data prepare --family {wildcards.family} {params.args} --out {params.out}"
        " > {log} 2>&1"

rule prepare_data:
    output:
        train="resources/data/{family}/train.json",
        test=directory("resources/data/{family}/test"),
    params:
        args=lambda w: flags(GRID.data_args(w.family)),
    log:
        log_of("prepare_data", "{family}"),
    benchmark:
        benchmark_of("prepare_data", "{family}")
    conda:
        ENV
    shell:
        "kdgrid data prepare --family {wildcards.family} {params.args} --out resources/data/{wildcards.family}"
        " > {log} 2>&1"

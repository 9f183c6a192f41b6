# Each family's training set (train.json) and test sets (test/<task>.json), synthetic or LLM-Adapters'.


rule prepare_data:
    output:
        train=out(DATA_DIR, TRAIN_FILE),
        test=directory(out(TEST_DIR)),
    params:
        **job_params("prepare_data", out=output_dir("train")),  # made_from: what the data are made from
    log:
        log_of("prepare_data", "{family}"),
    benchmark:
        benchmark_of("prepare_data", "{family}")
    conda:
        ENV
    shell:
        "kdgrid data prepare --family {wildcards.family} {params.args} --out {params.out}"
        " > {log} 2>&1"

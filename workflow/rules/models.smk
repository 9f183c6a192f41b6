# Tiny models are built locally from their spec (no hub); hub models need no rule: the jobs that use
# them load them by hub id, or from the local mirror folder given as `models.<name>.path`.
rule materialise_model:
    output:
        directory(out(TINY_MODEL_DIR)),
    params:
        world=TINY_WORLD,  # rebuilt when the code defining the tiny world changes
    log:
        log_of("materialise_model", "{model}"),
    benchmark:
        benchmark_of("materialise_model", "{model}")
    conda:
        ENV
    shell:
        "kdgrid models materialise {wildcards.model} --out {output} > {log} 2>&1"

# Tiny models are built locally from their spec (no hub); hub models are fetched once, where Snakemake
# runs (the login node), into models_dir at their pinned or locked revision, and every job loads the
# fetched folder offline; `path:` models are folders already and need no rule.
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


rule fetch_model:
    output:
        directory(GRID.hub_model_dir(f"{{model,{HUB_MODEL_REGEX}}}")),
    params:
        **job_params("fetch_model"),  # revision: a new pinned commit fetches again
    log:
        log_of("fetch_model", "{model}"),
    benchmark:
        benchmark_of("fetch_model", "{model}")
    conda:
        ENV
    shell:
        "HF_HUB_OFFLINE=0 kdgrid models fetch {wildcards.model} {params.hub} --out {output} > {log} 2>&1"

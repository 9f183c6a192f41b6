# Evaluation of every checkpoint (base model, SFT model, KD student) on its family's test tasks.


rule evaluate:
    input:
        unpack(INPUTS["evaluate"]),
    output:
        scores=out(EVAL_SCORES),
        records=out(EVAL_RECORDS),
    params:
        **job_params("evaluate", out=output_dir("scores")),
    log:
        log_of("evaluate", "{ckpt}"),
    benchmark:
        benchmark_of("evaluate", "{ckpt}")
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    conda:
        ENV
    shell:
        "kdgrid evaluate --model {params.model} --data-dir {params.data_dir} --family {params.family}"
        " --tasks {params.tasks} --out {params.out} {params.settings} --meta {params.meta} > {log} 2>&1"

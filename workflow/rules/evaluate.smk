# Evaluation of every checkpoint (base model, SFT model, KD student) on its family's test tasks.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        **eval_files("{ckpt}"),
    params:
        model=lambda w: checkpoint_model(evaluation(w).ckpt),
        family=lambda w: evaluation(w).family,
        data_dir=lambda w, input: os.path.dirname(input.test),
        tasks=lambda w: ",".join(GRID.families[evaluation(w).family].tasks),
        settings=flags(GRID.evaluation_args()),
        meta=lambda w: meta_flags(evaluation(w).meta),
        out=lambda w, output: os.path.dirname(output.scores),
    log:
        log_of("evaluate", "{ckpt}"),
    benchmark:
        benchmark_of("evaluate", "{ckpt}")
    threads: job_threads(plan_evaluate)
    resources:
        **job_resources(plan_evaluate),
    conda:
        ENV
    shell:
        "kdgrid evaluate --model {params.model} --data-dir {params.data_dir} --family {params.family}"
        " --tasks {params.tasks} --out {params.out} {params.settings} --meta {params.meta} > {log} 2>&1"

# Supervised fine-tuning: every teacher (once, at teacher_seed) and every student baseline (per seed).
rule sft:
    input:
        data=lambda w: train_data(w.family),
        model=lambda w: GRID.model_files(sft_run(w).model),
    output:
        model=directory(out(SFT_DIR, "model")),
        train_log=out(SFT_DIR, "train_log.jsonl"),
    params:
        model=lambda w: GRID.model_ref(w.model),
        training=lambda w: flags(GRID.training_args(w.family)),
        cell=lambda w: sft_run(w).id,
        out=lambda w, output: os.path.dirname(output.model),
    log:
        log_of("sft", SFT_DIR),
    benchmark:
        benchmark_of("sft", SFT_DIR)
    threads: job_threads(plan_sft)
    resources:
        **job_resources(plan_sft),
    conda:
        ENV
    shell:
        "kdgrid train --mode sft --model {params.model} --data {input.data} --out {params.out}"
        " --seed {wildcards.seed} {params.training} --cell {params.cell}"
        " --nproc {resources.nproc} --zero-stage {resources.zero_stage} > {log} 2>&1"

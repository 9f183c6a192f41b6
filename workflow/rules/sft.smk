# Supervised fine-tuning: every teacher (once, at teacher_seed) and every student baseline (per seed).
rule sft:
    input:
        unpack(INPUTS["sft"]),
    output:
        model=directory(out(CKPT_MODEL.format(ckpt=SFT_DIR))),
        train_log=out(CKPT_TRAIN_LOG.format(ckpt=SFT_DIR)),
    params:
        **job_params("sft", out=output_dir("model")),
    log:
        log_of("sft", SFT_DIR),
    benchmark:
        benchmark_of("sft", SFT_DIR)
    threads: job_threads("sft")
    resources:
        **job_resources("sft"),
        keep_checkpoints=KEEP_CHECKPOINTS,
    conda:
        ENV
    shell:
        # exec: a SIGTERM to the job (preemption, time limit) must reach kdgrid train, which saves a checkpoint,
        # without a shell in between that would die at once and end the job before the save.
        "exec kdgrid train --mode sft --model {params.model} --data {input.data} --out {params.out}"
        " --seed {wildcards.seed} {params.training} --cell {params.cell}"
        " --nproc {resources.nproc} --zero-stage {resources.zero_stage}"
        " --keep-checkpoints {resources.keep_checkpoints} > {log} 2>&1"

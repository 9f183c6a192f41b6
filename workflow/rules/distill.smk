# Knowledge distillation: one job per cell of the grid (teacher, student, method, temperature,
# teacher signal, seed).


rule distill:
    input:
        unpack(INPUTS["distill"]),
    output:
        model=directory(out(CKPT_MODEL.format(ckpt=KD_DIR))),
        train_log=out(CKPT_TRAIN_LOG.format(ckpt=KD_DIR)),
    params:
        **job_params("distill", teacher_cache=input_flag("cache", "--teacher-cache"), out=output_dir("model")),
    log:
        log_of("distill", KD_DIR),
    benchmark:
        benchmark_of("distill", KD_DIR)
    threads: job_threads("distill")
    resources:
        **job_resources("distill"),
        keep_checkpoints=KEEP_CHECKPOINTS,
    conda:
        ENV
    shell:
        # exec: a SIGTERM to the job (preemption, time limit) must reach kdgrid train, which saves a checkpoint,
        # without a shell in between that would die at once and end the job before the save.
        "exec kdgrid train --mode distill --model {params.student} --data {input.data} --out {params.out}"
        " {params.distill} {params.teacher_cache} {params.training} --cell {params.cell}"
        " --nproc {resources.nproc} --zero-stage {resources.zero_stage}"
        " --keep-checkpoints {resources.keep_checkpoints} > {log} 2>&1"

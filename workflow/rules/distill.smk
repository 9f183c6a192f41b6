# Knowledge distillation: one job per cell of the grid (teacher, student, method, temperature,
# teacher signal, seed).


rule distill:
    input:
        unpack(distill_inputs),
    output:
        model=directory(out(KD_DIR, "model")),
        train_log=out(KD_DIR, "train_log.jsonl"),
    params:
        student=lambda w: GRID.model_ref(w.student),
        model_revision=lambda w: GRID.revision_param(w.student),
        teacher_revision=lambda w: GRID.teacher_revision_param(w.teacher, kd_cell(w).teacher_kind),
        training=lambda w: flags(GRID.training_args(w.family)),
        distill=lambda w: flags(GRID.distill_args(kd_cell(w))),
        cell=lambda w: kd_cell(w).id,
        out=lambda w, output: os.path.dirname(output.model),
    log:
        log_of("distill", KD_DIR),
    benchmark:
        benchmark_of("distill", KD_DIR)
    threads: job_threads(plan_distill)
    resources:
        **job_resources(plan_distill),
        keep_checkpoints=KEEP_CHECKPOINTS,
    conda:
        ENV
    shell:
        # exec: a SIGTERM to the job (preemption, time limit) must reach kdgrid train, which saves a checkpoint,
        # without a shell in between that would die at once and end the job before the save.
        "exec kdgrid train --mode distill --model {params.student} --data {input.data} --out {params.out}"
        " {params.distill} {params.training} --cell {params.cell}"
        " --nproc {resources.nproc} --zero-stage {resources.zero_stage}"
        " --keep-checkpoints {resources.keep_checkpoints} > {log} 2>&1"

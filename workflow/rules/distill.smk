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
    conda:
        ENV
    shell:
        "kdgrid train --mode distill --model {params.student} --data {input.data} --out {params.out}"
        " {params.distill} {params.training} --cell {params.cell}"
        " --nproc {resources.nproc} --zero-stage {resources.zero_stage} > {log} 2>&1"

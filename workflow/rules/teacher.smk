# What the teachers give once per family, for every cell that needs it:
# - teacher_outputs: the top-k logits over the training set and their normalisers at one temperature,
#   which off-policy distillation cells read instead of running the teacher (one file per temperature:
#   a temperature added to the grid adds a cache and re-runs no cell of the others);
# - teacher_responses: the teacher's generated answers to the training set, the data of seqkd cells.


rule teacher_outputs:
    input:
        data=lambda w: train_data(teacher_outputs_job(w).family),
        teacher=lambda w: GRID.teacher_files(w.family, w.teacher, w.teacher_kind),
    output:
        out(TEACHER_OUTPUTS_FILE),
    params:
        teacher=lambda w: GRID.teacher_ref(w.family, w.teacher, w.teacher_kind),
        cutoff=lambda w: GRID.families[w.family].training["cutoff"],
        token_scope=lambda w: GRID.families[w.family].training["token_scope"],
        precision=lambda w: GRID.families[w.family].training["precision"],
    log:
        log_of("teacher_outputs", TEACHER_OUTPUTS_FILE),
    benchmark:
        benchmark_of("teacher_outputs", TEACHER_OUTPUTS_FILE)
    threads: job_threads(plan_teacher_outputs)
    resources:
        **job_resources(plan_teacher_outputs),
    conda:
        ENV
    shell:
        "kdgrid teacher-outputs --teacher {params.teacher} --data {input.data} --top-k {wildcards.top_k}"
        " --temperatures {wildcards.temperature} --cutoff {params.cutoff} --token-scope {params.token_scope}"
        " --precision {params.precision}"
        " --out {output} > {log} 2>&1"


rule teacher_responses:
    input:
        data=lambda w: train_data(teacher_responses_job(w).family),
        teacher=lambda w: GRID.teacher_files(w.family, w.teacher, w.teacher_kind),
    output:
        out(TEACHER_RESPONSES_FILE),
    params:
        teacher=lambda w: GRID.teacher_ref(w.family, w.teacher, w.teacher_kind),
        max_new_tokens=GRID.kd["seqkd_max_new_tokens"],
        precision=lambda w: GRID.families[w.family].training["precision"],
    log:
        log_of("teacher_responses", TEACHER_RESPONSES_FILE),
    benchmark:
        benchmark_of("teacher_responses", TEACHER_RESPONSES_FILE)
    threads: job_threads(plan_teacher_responses)
    resources:
        **job_resources(plan_teacher_responses),
    conda:
        ENV
    shell:
        "kdgrid teacher-responses --teacher {params.teacher} --data {input.data}"
        " --max-new-tokens {params.max_new_tokens} --precision {params.precision} --out {output} > {log} 2>&1"

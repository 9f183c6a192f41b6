# What the teachers give once per family, for every cell that needs it:
# - teacher_outputs: the top-k logits over the training set and their normalisers at one temperature,
#   which off-policy distillation cells read instead of running the teacher (one file per temperature:
#   a temperature added to the grid adds a cache and re-runs no cell of the others);
# - teacher_responses: the teacher's generated answers to the training set, the data of seqkd cells.


rule teacher_outputs:
    input:
        unpack(INPUTS["teacher_outputs"]),
    output:
        cache=out(TEACHER_OUTPUTS_FILE),
        fidelity=out(TEACHER_FIDELITY_FILE),
    params:
        **job_params("teacher_outputs"),
    log:
        log_of("teacher_outputs", TEACHER_OUTPUTS_FILE),
    benchmark:
        benchmark_of("teacher_outputs", TEACHER_OUTPUTS_FILE)
    threads: job_threads("teacher_outputs")
    resources:
        **job_resources("teacher_outputs"),
    conda:
        ENV
    shell:
        "kdgrid teacher-outputs --teacher {params.teacher} --data {input.data} --top-k {params.top_k}"
        " --temperatures {params.temperature} --cutoff {params.cutoff} --token-scope {params.token_scope}"
        " --precision {params.precision} --tail-samples {params.tail_samples}"
        " --out {output.cache} --fidelity-out {output.fidelity} > {log} 2>&1"


rule teacher_responses:
    input:
        unpack(INPUTS["teacher_responses"]),
    output:
        out(TEACHER_RESPONSES_FILE),
    params:
        **job_params("teacher_responses"),
    log:
        log_of("teacher_responses", TEACHER_RESPONSES_FILE),
    benchmark:
        benchmark_of("teacher_responses", TEACHER_RESPONSES_FILE)
    threads: job_threads("teacher_responses")
    resources:
        **job_resources("teacher_responses"),
    conda:
        ENV
    shell:
        "kdgrid teacher-responses --teacher {params.teacher} --data {input.data}"
        " --max-new-tokens {params.max_new_tokens} --precision {params.precision} --out {output} > {log} 2>&1"

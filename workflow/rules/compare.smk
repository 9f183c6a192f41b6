# Every KD student against its teacher, and every SFT student against each teacher it is distilled from:
# answer agreement, rationale BLEU and embedding similarity.


rule compare:
    input:
        unpack(INPUTS["compare"]),
    output:
        out(COMPARE_FILE),
    params:
        **job_params("compare", student=input_dir("student"), teacher=input_dir("teacher")),
    log:
        log_of("compare", "{comparison}"),
    benchmark:
        benchmark_of("compare", "{comparison}")
    threads: job_threads("compare")
    resources:
        **job_resources("compare"),
    conda:
        ENV
    shell:
        "kdgrid compare --student {params.student} --teacher {params.teacher} --out {output}"
        " --embedding-model {params.embedding_model} --meta {params.meta} > {log} 2>&1"

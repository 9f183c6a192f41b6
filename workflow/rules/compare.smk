# Every KD student against its teacher, and every SFT student against each teacher it is distilled from:
# answer agreement, rationale BLEU and embedding similarity.


rule compare:
    input:
        unpack(compare_inputs),
    output:
        out("{comparison}.json"),
    params:
        student=lambda w, input: os.path.dirname(input.student),
        teacher=lambda w, input: os.path.dirname(input.teacher),
        embedding_model=GRID.compare["embedding_model"],
        meta=lambda w: meta_flags(comparison(w).meta),
    log:
        log_of("compare", "{comparison}"),
    benchmark:
        benchmark_of("compare", "{comparison}")
    threads: job_threads(plan_light)
    resources:
        **job_resources(plan_light),
    conda:
        ENV
    shell:
        "kdgrid compare --student {params.student} --teacher {params.teacher} --out {output}"
        " --embedding-model {params.embedding_model} --meta {params.meta} > {log} 2>&1"

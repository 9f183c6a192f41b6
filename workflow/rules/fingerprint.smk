# The stamp of a folder input the workflow makes (a prepared test set): its content hash
# (kdgrid.fingerprint). Written here when the folder is new; renewed at parse time (common.smk) when its
# content changes, so that the rules reading it re-run exactly then. A `path:` model's stamp is written
# at parse time only, since its folder comes from outside the workflow.


rule fingerprint_folder:
    input:
        STAMPED_FOLDER,
    output:
        out(FOLDER_STAMP),
    params:
        cache=out(FINGERPRINT_CACHE),
    wildcard_constraints:
        kind=TEST_SETS_KIND,
    log:
        log_of("fingerprint_folder", "{kind}/{name}"),
    # no benchmark: Snakemake counts a benchmark file among the outputs it compares with the folder, and
    # only the stamp's timestamp is renewed at parse time (kdgrid.fingerprint.write_stamp)
    conda:
        ENV
    shell:
        "kdgrid fingerprint {input} --out {output} --cache {params.cache} > {log} 2>&1"

"""The figures `kdgrid plots` draws: fixed file names (D/<name>.png and .pdf) and the caption of each,
written to D/captions/<name>.rst for the Snakemake report. No heavy imports: the Snakefile may read
FIGURES at parse time."""

from __future__ import annotations

_IMPROVEMENT = ("Improvement is the best KD accuracy over temperatures minus the student's own SFT accuracy, "
                "in accuracy points, leaving out the teacher-signal ablations.")

CAPTIONS = {
    "fig1_accuracy": (
        "Average accuracy (%) of each student, per task family: the base model, the student fine-tuned on the "
        "task data (SFT), and the student distilled with each KD method. A KD bar is the mean over the student's "
        "teachers of the best accuracy over temperatures; its error bar spans the lowest to the highest teacher; with "
        "several seeds each KD cell is also a black point with its 95% confidence interval over seeds. "
        "Students are ordered by size. This is the paper's main comparison: KD against the SFT baseline."
    ),
    "fig2_improvement_vs_size": (
        "KD improvement on the family Average against student size (billions of parameters, log scale), per "
        "family and method. Lines join the mean over teachers; dots are single (teacher, student, method) cells. "
        f"{_IMPROVEMENT} The paper finds that gains shrink as students grow (H3)."
    ),
    "fig3_temperature": (
        "Temperature sweep: Average accuracy (%) of the distilled student against the softmax temperature of "
        "the KD loss, per teacher-student pair and method, with the student's SFT accuracy as a dashed line. "
        "Only pairs trained at two or more temperatures are shown; the methods are drawn slightly apart "
        "around each temperature so that equal accuracies do not hide each other."
    ),
    "fig4_teacher": (
        "KD improvement on the family Average against the teacher's own SFT accuracy (%, left) and the "
        f"teacher's size (billions of parameters, right), per method and family. {_IMPROVEMENT} "
        "A better or larger teacher does not by itself give a larger gain (H2)."
    ),
    "fig5_agreement_fidelity": (
        "The generalization vs fidelity paradox. Left and middle: KD improvement (points) against the "
        "student-teacher agreement (% of test items with the same answer) and against reasoning fidelity "
        "(BLEU of the student's rationale against the teacher's), one dot per cell and task, with Spearman's rho "
        "over the dots of each panel (the per-task tests are in hypotheses.csv, H4 and H5). Right: agreement with "
        "the teacher of the student's SFT model against that of its KD model (Average over tasks); dots above the "
        "diagonal mean KD made the student agree more with its teacher."
    ),
    "fig6_ablations": (
        "Teacher-signal ablations: Average accuracy (%) of a student distilled from the fine-tuned (SFT) teacher, "
        "from the task-unaware base model as teacher, and from the SFT teacher with Gaussian noise of standard "
        "deviation sigma on its logits, at the same method and temperature, next to the student's own SFT "
        "accuracy. A useful teacher signal needs task knowledge."
    ),
    "fig7_heatmap": (
        f"KD improvement (points) per task and per (teacher, student, method) cell; red is a gain over the student's "
        f"SFT, blue a loss. {_IMPROVEMENT}"
    ),
    "fig8_cost": (
        "Is KD worth its cost? Improvement of each KD checkpoint (Average accuracy points over its student's SFT "
        "model of the same seed; SFT teacher, no noise, every temperature) against its extra measured cost over "
        "that SFT model, per family and method: the cell's own training, evaluation and comparison plus its share "
        "of its teacher's SFT and evaluation and of the teacher-output cache or responses it reads, minus the SFT "
        "model's own cost (GPU-hours on GPUs, core-seconds on CPUs; tables/cost.csv). Up and to the left is cheap gain."
    ),
}
FIGURES = tuple(CAPTIONS)
FORMATS = ("png", "pdf")

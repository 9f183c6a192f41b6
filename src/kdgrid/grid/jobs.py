"""The jobs a grid holds: distillation cells, SFT runs, evaluations, comparisons and teacher signals."""

from __future__ import annotations

from dataclasses import dataclass

from .layout import KD_DIR, SFT_DIR, TEACHER_OUTPUTS_FILE, TEACHER_RESPONSES_FILE, ablation_name, fmt_number


@dataclass(frozen=True)
class Cell:
    """One distilled student: a teacher, a student, a method, a temperature, a teacher signal, a seed."""

    family: str
    teacher: str
    student: str
    method: str
    temperature: float
    noise_sigma: float
    teacher_kind: str
    seed: int

    @property
    def ablation(self) -> str:
        return ablation_name(self.teacher_kind, self.noise_sigma)

    @property
    def id(self) -> str:
        return KD_DIR.format(family=self.family, teacher=self.teacher, student=self.student, method=self.method,
                             temperature=fmt_number(self.temperature), ablation=self.ablation, seed=self.seed)


@dataclass(frozen=True)
class SftRun:
    family: str
    model: str
    seed: int

    @property
    def id(self) -> str:
        return SFT_DIR.format(family=self.family, model=self.model, seed=self.seed)


@dataclass(frozen=True)
class Evaluation:
    """One `kdgrid evaluate` job: `ckpt` is the checkpoint's cell id; results go to `<ckpt>/eval/`."""

    ckpt: str
    family: str
    role: str  # base | sft | kd
    model: str
    meta: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Comparison:
    """One `kdgrid compare` job: a student's evaluation against its teacher's; writes `<id>.json`."""

    id: str
    student_ckpt: str
    teacher_ckpt: str
    meta: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class TeacherOutputs:
    """One teacher-output cache: a teacher's top-k logits over its family's training set, with the
    normalisers of one temperature. One file per temperature, so that adding a temperature to the grid
    adds a cache and leaves the others (and the cells that read them) untouched."""

    family: str
    teacher: str
    teacher_kind: str
    temperature: float
    top_k: int

    @property
    def path(self) -> str:
        return TEACHER_OUTPUTS_FILE.format(family=self.family, teacher=self.teacher, teacher_kind=self.teacher_kind,
                                           temperature=fmt_number(self.temperature), top_k=self.top_k)


@dataclass(frozen=True)
class TeacherResponses:
    family: str
    teacher: str
    teacher_kind: str

    @property
    def path(self) -> str:
        return TEACHER_RESPONSES_FILE.format(family=self.family, teacher=self.teacher,
                                             teacher_kind=self.teacher_kind)


"""The KD methods: every fact about a method, in one registry entry (torch-free, so that the Snakefile
can read it at parse time).

The grid (which flags a cell gets, whether it may read the teacher cache), the trainer (which keyword
arguments its loss gets), `kdgrid.losses` (its name table), the commands' choices and the figures read
these entries. Adding a method is one entry here, its loss function in `kdgrid.losses` and a test
(docs/architecture.md, "Adding a KD method").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

from .errors import unknown

TEACHER_SIGNALS = ("logits", "responses")
TEACHER_KINDS = ("sft", "base")  # a KD cell's teacher: fine-tuned on the family, or the base model


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # its name in figures
    # The function of kdgrid.losses it trains with (its name: no torch import here); None for a method
    # that trains with cross-entropy on the teacher's responses.
    loss: str | None
    # The KD settings (keys of kdgrid.grid.DEFAULT_KD) it reads, in flag order: a cell's command gets only
    # these, so that changing, say, `skew` re-runs the skew_kl cells and nothing else.
    settings: tuple[str, ...]
    loss_settings: tuple[str, ...] = ()  # those of `settings` its loss function takes as keyword arguments
    teacher_signal: str = "logits"  # the teacher's logits per token, or its generated "responses" (seqkd)
    # With lmbda > 0 a share lmbda of its batches are the student's own samples (on-policy); off-policy
    # methods train on the data set's responses only.
    student_samples: bool = False
    # The relative first-step loss error (cache vs online teacher) a cell accepts by default
    # (config: teacher_cache.max_loss_error); None: no teacher cache can serve it.
    max_loss_error: float | None = None
    # Does the cache's tail samples estimate its loss without bias (kdgrid.losses)? Otherwise the cache
    # gives a (k+1)-bucket value, a lower bound whose error grows with the student's mass outside the
    # teacher's top-k.
    cache_unbiased: bool = False
    # The version of its loss definition (1 where it never changed). A distill command names it
    # (--loss-version) only where its value differs from version 1's, so that upgrading kdgrid re-runs
    # exactly the cells whose loss changed: `versions_agree_at` holds the (setting, value) pairs at which
    # every version gives the same loss (empty: they differ everywhere).
    loss_version: int = 1
    versions_agree_at: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.teacher_signal not in TEACHER_SIGNALS:
            raise ValueError(f"method {self.name}: teacher_signal {self.teacher_signal!r} is not one of "
                             f"{', '.join(TEACHER_SIGNALS)}")
        if (self.loss is None) != (self.teacher_signal == "responses"):
            raise ValueError(f"method {self.name}: a method has a loss function exactly when it reads logits")
        if not set(self.loss_settings) <= set(self.settings):
            raise ValueError(f"method {self.name}: loss_settings must be among its settings")
        if self.student_samples and "lmbda" not in self.settings:
            raise ValueError(f"method {self.name}: a method that samples from the student reads lmbda")
        if self.max_loss_error is not None and self.teacher_signal != "logits":
            raise ValueError(f"method {self.name}: the teacher cache holds logits only")

    @property
    def reads_logits(self) -> bool:
        return self.teacher_signal == "logits"

    @property
    def reads_responses(self) -> bool:
        return self.teacher_signal == "responses"

    def off_policy(self, lmbda: float) -> bool:
        """Does it train on the data set's responses only (never on the student's own samples)?"""
        return not self.student_samples or float(lmbda) == 0

    def loss_version_flag(self, kd: dict) -> list[str]:
        """`--loss-version N` where this loss's value differs from version 1 at the settings `kd`, else []."""
        agree = self.versions_agree_at and all(float(kd[key]) == value for key, value in self.versions_agree_at)
        if self.loss_version == 1 or agree:
            return []
        return ["--loss-version", str(self.loss_version)]


REGISTRY = MappingProxyType({m.name: m for m in (
    Method("fkl", "forward KL (SeqKD)", "forward_kl", ("kd_weight",), max_loss_error=0.005, cache_unbiased=True),
    Method("rkl", "reverse KL (RevKD)", "reverse_kl", ("kd_weight",), max_loss_error=0.02),
    # gkd 2: kd.beta as in the GKD paper and TRL >= 1.0, M = beta p_T + (1 - beta) p_S; version 1 had
    # M = beta p_S + (1 - beta) p_T with the weights the other way round, the same loss only at beta 0.5.
    Method("gkd", "GKD", "generalized_jsd", ("beta", "lmbda", "gkd_max_new_tokens", "kd_weight"),
           loss_settings=("beta",), student_samples=True, max_loss_error=0.005, loss_version=2,
           versions_agree_at=(("beta", 0.5),)),
    # Kim & Rush: cross-entropy on the teacher's generated answers to the training prompts
    Method("seqkd", "SeqKD (teacher text)", None, (), teacher_signal="responses"),
    Method("skew_kl", "skew KL", "skew_kl", ("skew", "kd_weight"), loss_settings=("skew",), max_loss_error=0.005,
           cache_unbiased=True),
    Method("tvd", "TVD", "tvd", ("kd_weight",), max_loss_error=0.005, cache_unbiased=True),
)})
METHODS = tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The registry entry of `name`; a KdgridError naming the known methods for any other name."""
    if name not in REGISTRY:
        raise unknown("KD method", name, METHODS)
    return REGISTRY[name]


def cache_serves(name: str, *, enabled: bool, lmbda: float, noise_sigma: float, temperature: float,
                 max_temperature: float = math.inf) -> bool:
    """May a teacher-output cache stand in for the teacher of a cell? Only when a cache is there (enabled),
    for a method it can serve (logits, off-policy at this lmbda), without teacher noise (the cache holds the
    clean teacher), at a temperature up to max_temperature (its top-k error grows with temperature). The
    grid decides with it which cells get a cache, `kdgrid train` whether it reads the one it is given;
    whether it then does is its first-step check (`max_loss_error`)."""
    entry = get_method(name)
    return (bool(enabled) and entry.max_loss_error is not None and entry.off_policy(lmbda)
            and noise_sigma == 0 and temperature <= max_temperature)

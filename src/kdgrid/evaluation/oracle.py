"""A fake lm-eval model that answers every test item with its gold output.

It checks the scoring path end to end: run through the same lm-eval tasks, filters and metrics as a
real checkpoint, the oracle must score 100% on every task whose gold outputs state their answer.
Registered with lm-eval as `kdgrid-oracle` (model_args: `data_dir=FAMILY_DIR`).
"""

from __future__ import annotations

from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..errors import KdgridError
from ..io import read_json
from ..prompt import build_prompt


def gold_outputs(data_dir) -> dict[str, str]:
    """`{Alpaca prompt: gold output}` over every test set in DATA_DIR/test/."""
    outputs = {}
    for test_file in sorted(Path(data_dir, "test").glob("*.json")):
        for record in read_json(test_file):
            outputs[build_prompt(record["instruction"], record.get("input") or "")] = record["output"]
    return outputs


@register_model("kdgrid-oracle")
class OracleLM(LM):
    def __init__(self, data_dir, **lm_kwargs) -> None:
        super().__init__()
        self.outputs = gold_outputs(data_dir)
        if not self.outputs:
            raise KdgridError(f"{Path(data_dir, 'test')}: no test set to take gold outputs from")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        responses = []
        for request in requests:
            prompt = request.args[0]
            if prompt not in self.outputs:
                raise KdgridError(f"the oracle has no gold output for the prompt {prompt[:200]!r}")
            responses.append(self.outputs[prompt])
        return responses

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the oracle only answers generate_until requests")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the oracle only answers generate_until requests")

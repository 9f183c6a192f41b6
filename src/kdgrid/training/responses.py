"""Greedy generation of a model's responses to training prompts (Kim & Rush's sequence-level KD data)."""

from __future__ import annotations

from ..prompt import build_prompt


def greedy_responses(model_name: str, records: list[dict], max_new_tokens: int, batch_size: int,
                     precision: str = "auto") -> list[str]:
    """The model's greedy continuation of each record's Alpaca prompt, up to eos or max_new_tokens,
    in record order. Prompts are batched by length (left padding) so little compute goes to padding."""
    import torch

    from . import model_io

    precision = model_io.resolve_precision(precision)
    tokenizer = model_io.load_tokenizer(model_name)
    model = model_io.load_teacher(model_name, precision)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    prompts = [tokenizer(build_prompt(r["instruction"], r.get("input", "")), add_special_tokens=True)["input_ids"]
               for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    responses: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                attention_mask[row, width - len(prompts[i]):] = 1
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                 do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for i, text in zip(batch, texts):
                responses[i] = text.strip()
    return responses

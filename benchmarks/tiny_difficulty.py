"""How hard the embedded tiny world is: SFT accuracy of each tiny model under the demo's settings.

    python benchmarks/tiny_difficulty.py [--family math,commonsense] [--models tiny-xs,tiny-s,tiny-m,tiny-l]
        [--seeds 1] [--init-std 0.05] [--config config/tiny.yaml] [--out benchmarks/out/tiny_difficulty.json]

For each (family, model, seed): prepare the family's data as the workflow does (the config's
synthetic seed, sizes and tasks), materialise the tiny model (initialised at --init-std, default
kdgrid.tiny_models.INIT_STD), run `kdgrid train --mode sft` in this process with the config's
training flags, and score greedy generations on the test sets with
kdgrid.answers (the rule the evaluation uses). Prints accuracy per task, the average, the majority-
answer baseline and the training time; writes them as JSON. Used to tune the world
(docs/tiny_world.md): the issue's target is a tiny teacher clearly above the tiny students.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def greedy_scores(model_dir: Path, tests: dict[str, list[dict]], max_new_tokens: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdgrid.answers import is_correct
    from kdgrid.prompt import build_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    scores = {}
    for task, records in tests.items():
        batch = tokenizer([build_prompt(r["instruction"], r["input"]) for r in records], return_tensors="pt",
                          padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        scores[task] = 100 * sum(is_correct(task, t, r["answer"]) for t, r in zip(texts, records)) / len(records)
    return scores


def majority(tests: dict[str, list[dict]]) -> float:
    """Average over tasks of the accuracy of always giving the task's most common gold answer."""
    shares = []
    for records in tests.values():
        answers = [r["answer"] for r in records]
        shares.append(100 * max(answers.count(a) for a in set(answers)) / len(answers))
    return sum(shares) / len(shares)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="math,commonsense")
    p.add_argument("--models", default="tiny-xs,tiny-s,tiny-m,tiny-l")
    p.add_argument("--seeds", default="1")
    p.add_argument("--init-std", type=float, default=None)
    p.add_argument("--config", default=str(ROOT / "config" / "tiny.yaml"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "tiny_difficulty.json"))
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from kdgrid import tiny_models
    from kdgrid.errors import KdgridError

    threads, init_std = torch.get_num_threads(), tiny_models.INIT_STD
    torch.set_num_threads(1)
    if args.init_std is not None:
        tiny_models.INIT_STD = args.init_std
    try:
        return measure(args)
    except KdgridError as error:
        print(f"tiny_difficulty: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
        tiny_models.INIT_STD = init_std


def measure(args) -> int:
    from kdgrid import tiny_models
    from kdgrid.cli import main as kdgrid
    from kdgrid.errors import KdgridError, unknown
    from kdgrid.family_data import prepare_family
    from kdgrid.grid import expand_grid, load_config
    from kdgrid.io import write_json
    from kdgrid.records import load_records

    config = load_config(args.config)
    grid = expand_grid(config)
    max_new = int(config.get("evaluation", {}).get("max_new_tokens", 48))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdgrid-difficulty-") as tmp:
        tmp = Path(tmp)
        for family in args.family.split(","):
            if family not in config["families"]:
                raise unknown(f"family of {args.config}", family, config["families"])
            spec = config["families"][family]
            data = spec["data"]
            if data.get("source") != "synthetic":
                raise KdgridError(f"{args.config}: families.{family}.data.source is {data.get('source')!r}; "
                                  f"this benchmark measures the synthetic tiny world only")
            folder = prepare_family(family, "synthetic", tmp / family, seed=data["seed"], n_train=data["n_train"],
                                    n_test=data["n_test"], tasks=spec.get("tasks"), limit_test=data.get("limit_test"))
            tests = {f.stem: load_records(f) for f in sorted((folder / "test").glob("*.json"))}
            for name in args.models.split(","):
                tiny_models.materialise(name, tmp / name)
                for seed in args.seeds.split(","):
                    out = tmp / f"{family}-{name}-{seed}"
                    started = time.perf_counter()
                    code = kdgrid(["train", "--mode", "sft", "--model", str(tmp / name), "--data",
                                   str(folder / "train.json"), "--out", str(out), "--seed", seed,
                                   *grid.training_args(family)])
                    if code != 0:
                        return code
                    train_s = time.perf_counter() - started
                    scores = greedy_scores(out / "model", tests, max_new)
                    row = {"family": family, "model": name, "seed": int(seed), "init_std": tiny_models.INIT_STD,
                           "accuracy": scores, "average": sum(scores.values()) / len(scores),
                           "majority": majority(tests), "train_s": round(train_s, 1)}
                    rows.append(row)
                    print(f"{family:12s} {name:8s} seed {seed}  " + "  ".join(f"{t} {v:5.1f}" for t, v in scores.items())
                          + f"  | avg {row['average']:5.1f} (majority {row['majority']:.1f})  train {train_s:.0f} s",
                          flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"config": args.config, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

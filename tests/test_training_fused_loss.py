"""The trainer's fused loss (TrainConfig.fused_loss: losses from the last hidden states and the output
layer) against its logits path, on the tiny models: the same loss values, gradients and updated weights,
for every method, SFT, the teacher online and the cache, LoRA and full fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch

from kdgrid.teacher_cache import compute_teacher_outputs
from kdgrid.tiny_models import build_tiny_model
from kdgrid.training.config import TrainConfig

STUDENT, TEACHER = "tiny-xs", "tiny-m"  # tied 768-wide student, untied 896-wide teacher
BATCH, SEQ = 3, 12
METHODS = {"fkl": {}, "rkl": {}, "gkd": {"beta": 0.3, "lmbda": 0.0}, "skew_kl": {"skew": 0.2}, "tvd": {}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    teacher = build_tiny_model(TEACHER, seed=1).eval()
    teacher.requires_grad_(False)
    return build_tiny_model(STUDENT, seed=2), teacher


@pytest.fixture(scope="module")
def examples():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(768, (BATCH, SEQ), generator=g).tolist()
    lengths = [SEQ, SEQ - 3, SEQ - 5]  # right padding in the batch
    return [{"input_ids": row[:n], "loss_mask": [0] * 4 + [1] * (n - 4), "prompt_len": 4}
            for row, n in zip(ids, lengths)]


@pytest.fixture(scope="module")
def cache_file(models, examples, tmp_path_factory):
    path = tmp_path_factory.mktemp("fused") / "teacher_outputs.pt"
    compute_teacher_outputs(models[1], [e["input_ids"] for e in examples], 16, [1.0, 2.0], batch_size=BATCH,
                            widths=[768, 896], tail_samples=8).save(path)
    return path


def make_trainer(cfg: TrainConfig, student, teacher, examples, workdir):
    """A KDTrainer set up as kdgrid.training.engine sets it up."""
    from kdgrid.training.engine import open_teacher_cache, training_arguments
    from kdgrid.training.model_io import apply_lora
    from kdgrid.training.trainer import KDTrainer

    cfg.validate()
    student = copy.deepcopy(student)
    if cfg.finetune == "lora":
        torch.manual_seed(0)
        student = apply_lora(student, cfg)
    cache = open_teacher_cache(cfg, examples, None, 768) if cfg.teacher_source == "cache" else None
    trainer = KDTrainer(model=student, args=training_arguments(cfg, "fp32", workdir / "checkpoints"), cfg=cfg,
                        teacher=teacher if cfg.teacher else None, teacher_cache=cache, student_width=768,
                        pad_token_id=0, eos_token_id=0)
    # SGD for the step: AdamW's first step is about lr * sign(g) per entry, which turns float rounding of a
    # gradient entry near 0 into a +-lr difference; SGD's update is proportional to the gradient.
    trainer.optimizer = torch.optim.SGD([p for p in trainer.model.parameters() if p.requires_grad], lr=cfg.lr)
    trainer.current_gradient_accumulation_steps = 1  # set by the Trainer's loop otherwise
    return trainer


def one_step(cfg_args: dict, models, examples, workdir):
    """(loss, gradients, updated trainable weights) of one training step, fused and on logits."""
    from kdgrid.training.data import Collator, ExampleDataset

    batch = Collator(pad_token_id=0)([ExampleDataset(examples)[i] for i in range(len(examples))])
    results = []
    for fused in (True, False):
        cfg = TrainConfig(data=str(workdir / "unused.json"), out=str(workdir), model=STUDENT, micro_batch_size=BATCH,
                          grad_accum=1, cutoff=SEQ, precision="fp32", fused_loss=fused, lr=0.5, warmup_steps=0,
                          cell=f"fused-{fused}", **cfg_args)
        trainer = make_trainer(cfg, models[0], models[1], examples, workdir / f"fused-{fused}")
        model = trainer.model
        shapes = []
        head = model.get_output_embeddings()
        hook = head.register_forward_hook(lambda m, i, out, seen=shapes: seen.append(out.shape[-1]))
        loss = trainer.training_step(model, dict(batch))
        hook.remove()
        assert shapes == [head.in_features if fused else head.out_features]  # the fused step forms no logits
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        trainer.optimizer.step()
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads, weights, trainer))
    return results


def assert_same(fused, logits):
    """Loss, gradients and updated weights to 1e-5 relative."""
    torch.testing.assert_close(fused[0], logits[0], rtol=1e-5, atol=1e-7)
    assert fused[1].keys() == logits[1].keys() and fused[1]
    for name in fused[1]:
        torch.testing.assert_close(fused[1][name], logits[1][name], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(fused[2][name], logits[2][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("source", ["online", "cache"])
@pytest.mark.parametrize("method", list(METHODS))
def test_distill_step_equals_the_logits_path(method, source, models, examples, cache_file, tmp_path):
    args = {"mode": "distill", "method": method, "temperature": 2.0, **METHODS[method]}
    if source == "online":
        args["teacher"] = "tiny-m-in-memory"
    else:
        args["teacher_cache"] = str(cache_file)
    fused, logits = one_step(args, models, examples, tmp_path)
    assert (fused[3].teacher_cache is not None) == (source == "cache")
    assert float(fused[0]) > 0
    assert_same(fused, logits)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_sft_step_equals_the_logits_path(finetune, models, examples, tmp_path):
    fused, logits = one_step({"mode": "sft", "finetune": finetune}, models, examples, tmp_path)
    assert_same(fused, logits)
    if finetune == "full":  # the tied output layer trains: its gradient comes from the loss and the embedding
        assert "model.embed_tokens.weight" in fused[1]


@pytest.mark.parametrize("args", [
    {"finetune": "full", "teacher": "tiny-m-in-memory"},
    {"finetune": "full", "teacher_cache": "CACHE"},
    {"kd_weight": 0.5, "teacher": "tiny-m-in-memory", "token_scope": "response"},
    {"teacher": "tiny-m-in-memory", "teacher_cache": "CACHE"},  # the first step checks the cache
    {"noise_sigma": 0.5, "teacher": "tiny-m-in-memory"},  # the teacher's logits (noised), the student's hidden states
], ids=["full-online", "full-cache", "kd-weight-response", "cache-check", "noise"])
def test_other_distill_settings_equal_the_logits_path(args, models, examples, cache_file, tmp_path):
    args = {k: str(cache_file) if v == "CACHE" else v for k, v in args.items()}
    fused, logits = one_step({"mode": "distill", "method": "fkl", **args}, models, examples, tmp_path)
    assert_same(fused, logits)
    if "teacher_cache" in args and "teacher" in args:
        signals = [f[3].teacher_signal for f in (fused, logits)]
        assert signals[0]["cached_loss"] == pytest.approx(signals[1]["cached_loss"], rel=1e-5)


def test_fused_loss_flag_of_the_command_line():
    import argparse

    from kdgrid.commands.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--mode", "sft", "--model", "m", "--data", "d", "--out", "o"]
    assert TrainConfig.from_args(parser.parse_args(base)).fused_loss
    assert not TrainConfig.from_args(parser.parse_args([*base, "--fused-loss", "0"])).fused_loss

"""kdgrid's distillation against the peer implementation, TRL's GKD (trl 1.16, `trl.experimental.gkd`, a
test-only dependency): the generalized JSD at several beta and temperatures on random logits, and
off-policy training steps on tiny models. Conventions aligned as docs/training.md states them: kdgrid
multiplies its losses by tau² (TRL does not), and averages fkl per sequence (TRL and our gkd per token)."""

import copy
import os
import random

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
trl_gkd = pytest.importorskip(
    "trl.experimental.gkd",
    reason="trl cannot be imported: the conformance test against TRL's GKD needs the test-only dependency "
           "trl==1.16.0 (in the `test` extra of pyproject.toml; pip install trl==1.16.0)")

from kdgrid import losses

torch.set_num_threads(1)
trl_jsd = trl_gkd.GKDTrainer.generalized_jsd_loss


def random_batch(seed: int, ragged: bool = True):
    """Student and teacher logits [3, 7, 50] in float64 and a mask of the counted positions, also as
    TRL's labels (-100 where a position does not count; TRL reads nothing else of them)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(3, 7, 50, generator=g, dtype=torch.float64) * 3
    t = torch.randn(3, 7, 50, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(3, 7, generator=g) > 0.3 if ragged else torch.ones(3, 7, dtype=torch.bool)
    mask[:, 0] = True
    return s, t, mask, torch.where(mask, 0, -100)


def ours_and_trls(beta, temperature, seed=0, ragged=True):
    """(our loss / tau², its gradient / tau², TRL's loss, its gradient) w.r.t. the student's logits."""
    s, t, mask, labels = random_batch(seed, ragged)
    s_ours, s_trl = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours = losses.generalized_jsd(s_ours, t, mask.double(), beta=beta, temperature=temperature)
    ours.backward()
    trl = trl_jsd(s_trl, t, labels=labels, beta=beta, temperature=temperature)
    trl.backward()
    scale = temperature**2
    return ours.item() / scale, s_ours.grad / scale, trl.item(), s_trl.grad


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_equals_trls(beta, temperature):
    for seed in range(3):
        ours, ours_grad, trl, trl_grad = ours_and_trls(beta, temperature, seed)
        assert ours == pytest.approx(trl, rel=1e-6)
        torch.testing.assert_close(ours_grad, trl_grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("beta,kl", [(0.0, losses.forward_kl), (1.0, losses.reverse_kl)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_ends_are_forward_and_reverse_kl_as_in_trl(beta, kl, temperature):
    # the GKD paper's assignment: beta 0 is forward KL(p_T || p_S), beta 1 reverse KL(p_S || p_T)
    ours, ours_grad, trl, trl_grad = ours_and_trls(beta, temperature, ragged=False)
    assert ours == pytest.approx(trl, rel=1e-6)
    torch.testing.assert_close(ours_grad, trl_grad, rtol=1e-6, atol=1e-12)
    # with every sequence equally long, token and sequence means agree: exactly our fkl / rkl
    s, t, mask, _ = random_batch(0, ragged=False)
    assert torch.equal(losses.generalized_jsd(s, t, mask.double(), beta=beta, temperature=temperature),
                       kl(s, t, mask.double(), temperature=temperature))


# --- training steps on tiny models ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tokenizer, tiny-xs as the student and tiny-s as the teacher (TRL needs equal vocabulary widths),
    and tokenised synthetic math examples."""
    from kdgrid import synthetic
    from kdgrid.tiny_models import build_tiny_model
    from kdgrid.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    rng = random.Random(0)
    records = [task(rng) for task in (synthetic.syn_twostep, synthetic.syn_arith) * 2]
    return {"tokenizer": tokenizer, "records": records, "student": build_tiny_model("tiny-xs", seed=1),
            "teacher": build_tiny_model("tiny-s", seed=2), "tmp": tmp_path_factory.mktemp("trl")}


def batch_of(tiny, cutoff):
    from kdgrid.training.batches import Collator, tokenize_records

    examples = tokenize_records(tiny["records"], tiny["tokenizer"], cutoff=cutoff)
    return Collator(tiny["tokenizer"].pad_token_id)([{**e, "index": i} for i, e in enumerate(examples)])


def one_step_each(tiny, method, beta, batch, name):
    """The loss and parameter gradients of one off-policy step (lmbda 0, temperature 1) of kdgrid's
    KDTrainer and of TRL's GKDTrainer, from the same student weights on the same batch."""
    from datasets import Dataset

    from kdgrid.training.batches import Collator, ExampleDataset
    from kdgrid.training.config import TrainConfig
    from kdgrid.training.engine import training_arguments
    from kdgrid.training.trainer import KDTrainer

    tokenizer, out = tiny["tokenizer"], tiny["tmp"] / name
    student, twin = copy.deepcopy(tiny["student"]).train(), copy.deepcopy(tiny["student"]).train()
    cfg = TrainConfig(mode="distill", model="tiny-xs", data="-", out=str(out), teacher="tiny-s", method=method,
                      beta=beta, lmbda=0.0, micro_batch_size=4, grad_accum=1, precision="fp32",
                      finetune="full").validate()
    ours = KDTrainer(model=student, args=training_arguments(cfg, "fp32", out / "ours"),
                     train_dataset=ExampleDataset([]), data_collator=Collator(tokenizer.pad_token_id), cfg=cfg,
                     teacher=copy.deepcopy(tiny["teacher"]), student_width=student.config.vocab_size,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    # bf16 off explicitly: TRL's default would switch the (process-wide) accelerator to bf16 autocast
    args = trl_gkd.GKDConfig(output_dir=str(out / "trl"), per_device_train_batch_size=4,
                             gradient_accumulation_steps=1, lmbda=0.0, beta=beta, bf16=False, report_to=[],
                             use_cpu=not torch.cuda.is_available())
    chat = Dataset.from_list([{"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]}])
    peer = trl_gkd.GKDTrainer(model=twin, teacher_model=copy.deepcopy(tiny["teacher"]), args=args,
                              train_dataset=chat, processing_class=tokenizer)
    ours.current_gradient_accumulation_steps = peer.current_gradient_accumulation_steps = 1  # set by train()
    ours_loss = ours.training_step(student, dict(batch)).item()
    trl_loss = peer.training_step(peer.model, {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).item()
    grads = [(p.grad, q.grad) for p, q in zip(student.parameters(), peer.model.parameters(), strict=True)]
    return ours_loss, trl_loss, grads


def assert_same_step(ours_loss, trl_loss, grads):
    # float32 models: both sides round (at beta 0.9 the mixture is close to p_T and KL(p_T || M) a small
    # difference of logs; measured 2.7e-6 relative there, <= 1e-7 at beta 0, 0.1 and 0.5)
    assert ours_loss == pytest.approx(trl_loss, rel=1e-5)
    for ours, trl in grads:
        torch.testing.assert_close(ours, trl, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method,beta", [("fkl", 0.0), ("gkd", 0.0), ("gkd", 0.1), ("gkd", 0.5), ("gkd", 0.9)])
def test_an_off_policy_training_step_equals_trls(tiny, method, beta):
    # every sequence 40 tokens long: our per-sequence mean (fkl) is TRL's per-token mean
    batch = batch_of(tiny, cutoff=40)
    assert batch["attention_mask"].all()
    assert_same_step(*one_step_each(tiny, method, beta, batch, f"{method}{beta}"))


@pytest.mark.slow
def test_on_a_ragged_batch_only_the_averaging_differs(tiny):
    batch = batch_of(tiny, cutoff=512)
    assert not batch["attention_mask"].all()
    # gkd at beta 0 is forward KL averaged per token, as TRL averages: the same step
    assert_same_step(*one_step_each(tiny, "gkd", 0.0, batch, "ragged-gkd"))
    # fkl averages TRL's per-token values per sequence, then over the sequences
    ours_fkl, trl_fkl, _ = one_step_each(tiny, "fkl", 0.0, batch, "ragged-fkl")
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        student, teacher = (tiny[m](**inputs).logits[:, :-1] for m in ("student", "teacher"))
    per_token = trl_jsd(student, teacher, beta=0.0, reduction="none").sum(-1)
    counted = batch["labels"][:, 1:] != -100
    assert trl_fkl == pytest.approx(((per_token * counted).sum() / counted.sum()).item(), rel=1e-5)
    assert ours_fkl == pytest.approx(((per_token * counted).sum(1) / counted.sum(1)).mean().item(), rel=1e-5)

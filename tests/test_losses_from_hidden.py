"""kdgrid.losses.linear_kd_loss and linear_cross_entropy: the losses from hidden states and the output layer
equal the losses of the materialised logits (values and gradients), without a [tokens, vocab] tensor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kdgrid import losses, losses_from_hidden
from kdgrid.errors import KdgridError
from kdgrid.teacher_cache import compute_teacher_outputs
from kdgrid.training.trainer import causal_lm_loss
from loss_references import FixedTeacher

torch.set_num_threads(1)
METHODS = {"fkl": {}, "rkl": {}, "gkd": {"beta": 0.3}, "gkd_beta0": {"beta": 0.0}, "gkd_beta1": {"beta": 1.0},
           "skew_kl": {"skew": 0.1}, "tvd": {}}




def case(student_vocab=50, teacher_vocab=60, batch=3, seq=7, hidden=16, teacher_hidden=24, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        hidden=torch.randn(batch, seq, hidden, generator=g, dtype=dtype),
        weight=torch.randn(student_vocab, hidden, generator=g, dtype=dtype) * 0.5,
        bias=torch.randn(student_vocab, generator=g, dtype=dtype),
        teacher_hidden=torch.randn(batch, seq, teacher_hidden, generator=g, dtype=dtype),
        teacher_weight=torch.randn(teacher_vocab, teacher_hidden, generator=g, dtype=dtype) * 0.5,
        mask=torch.tensor([[1.0] * seq, [0.0] * 3 + [1.0] * (seq - 3), [0.0] * seq][:batch]),
    )


def sparse(c, temperature, k=5, samples=0):
    logits = (c.teacher_hidden @ c.teacher_weight.T).float()
    examples = [[1] * logits.shape[1]] * logits.shape[0]
    cache = compute_teacher_outputs(FixedTeacher(logits), examples, k, [temperature], batch_size=len(examples),
                                    widths=sorted({logits.shape[-1], min(logits.shape[-1], c.weight.shape[0])}),
                                    tail_samples=samples)
    return cache.batch(range(len(examples)), logits.shape[1], temperature,
                       width=min(c.weight.shape[0], logits.shape[-1]))


def teachers(c, kind, temperature):
    """(teacher for linear_kd_loss, teacher for kd_loss on logits)."""
    logits = c.teacher_hidden @ c.teacher_weight.T
    if kind == "logits":
        return logits, logits
    if kind == "pair":
        return (c.teacher_hidden, c.teacher_weight), logits
    teacher = sparse(c, temperature, samples=0 if kind == "cache" else 16)
    return teacher, teacher


def both(c, method, teacher_kind, temperature, with_bias=True, train_weight=True, scale=0.7):
    kwargs = METHODS[method]
    method = method.split("_beta")[0]
    fused_teacher, logits_teacher = teachers(c, teacher_kind, temperature)
    results = []
    for fused in (True, False):
        h = c.hidden.clone().requires_grad_(True)
        w = c.weight.clone().requires_grad_(train_weight)
        b = c.bias.clone().requires_grad_(True) if with_bias else None
        if fused:
            loss = losses.linear_kd_loss(h, w, fused_teacher, c.mask, method, temperature, bias=b, **kwargs)
        else:
            logits = h @ w.T + (b if with_bias else 0)
            loss = losses.kd_loss(method, logits, logits_teacher, c.mask, temperature=temperature, **kwargs)
        (loss * scale).backward()
        results.append((loss.detach(), h.grad, w.grad, None if b is None else b.grad))
    return results


@pytest.mark.parametrize("teacher_kind", ["logits", "pair", "cache", "cache_tail"])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_equals_the_loss_of_the_logits(method, teacher_kind, temperature, monkeypatch):
    monkeypatch.setattr(losses_from_hidden, "SUB_CHUNK_ELEMENTS", 120)  # a few rows per sub-chunk
    monkeypatch.setattr(losses_from_hidden, "HEAD_BLOCK_ELEMENTS", 300)  # a few sub-chunks per block
    c = case()
    fused, ref = both(c, method, teacher_kind, temperature)
    assert float(ref[0]) > 0
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["fkl", "gkd", "tvd"])
def test_student_wider_than_the_teacher_and_float32(method):
    c = case(student_vocab=70, teacher_vocab=60, dtype=torch.float32)
    for kind in ("logits", "pair", "cache_tail"):
        fused, ref = both(c, method, kind, 2.0)
        for a, b in zip(fused, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert bool((fused[2][60:] == 0).all())  # the student's rows past the shared width get no gradient


def test_frozen_output_layer_and_no_bias():
    c = case()
    fused, ref = both(c, "fkl", "pair", 1.0, with_bias=False, train_weight=False)
    assert fused[2] is None and ref[2] is None
    torch.testing.assert_close(fused[0], ref[0])
    torch.testing.assert_close(fused[1], ref[1])


def test_no_masked_token_gives_zero_and_zero_gradients():
    c = case()
    h = c.hidden.clone().requires_grad_(True)
    loss = losses.linear_kd_loss(h, c.weight, c.teacher_hidden @ c.teacher_weight.T, torch.zeros(3, 7), "rkl")
    loss.backward()
    assert float(loss.detach()) == 0.0 and bool((h.grad == 0).all())


def test_repeated_and_scaled_backward_and_no_grad():
    c = case()
    h = c.hidden.clone().requires_grad_(True)
    w = c.weight.clone().requires_grad_(True)
    loss = losses.linear_kd_loss(h, w, (c.teacher_hidden, c.teacher_weight), c.mask, "skew_kl", skew=0.2)
    (loss * 0.25).backward(retain_graph=True)
    first_h, first_w = h.grad.clone(), w.grad.clone()
    h.grad, w.grad = None, None
    loss.backward()
    torch.testing.assert_close(h.grad, first_h * 4)
    torch.testing.assert_close(w.grad, first_w * 4)
    with torch.no_grad():
        again = losses.linear_kd_loss(h, w, (c.teacher_hidden, c.teacher_weight), c.mask, "skew_kl", skew=0.2)
    assert not again.requires_grad and float(again) == pytest.approx(float(loss.detach()))


def test_gradcheck_through_hidden_weight_and_bias(monkeypatch):
    monkeypatch.setattr(losses_from_hidden, "SUB_CHUNK_ELEMENTS", 60)
    monkeypatch.setattr(losses_from_hidden, "HEAD_BLOCK_ELEMENTS", 130)
    c = case(student_vocab=12, teacher_vocab=14, batch=2, seq=3, hidden=4, teacher_hidden=5)
    teacher = c.teacher_hidden @ c.teacher_weight.T
    inputs = (c.hidden.clone().requires_grad_(True), c.weight.clone().requires_grad_(True),
              c.bias.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda h, w, b: losses.linear_kd_loss(h, w, teacher, c.mask[:2, :3], "gkd", 2.0, bias=b, beta=0.4), inputs)


def test_cross_entropy_equals_causal_lm_loss(monkeypatch):
    monkeypatch.setattr(losses_from_hidden, "SUB_CHUNK_ELEMENTS", 120)
    monkeypatch.setattr(losses_from_hidden, "HEAD_BLOCK_ELEMENTS", 300)
    c = case(dtype=torch.float32)
    labels = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    labels[0, :4] = -100
    results = []
    for fused in (True, False):
        h = c.hidden.clone().requires_grad_(True)
        w = c.weight.clone().requires_grad_(True)
        b = c.bias.clone().requires_grad_(True)
        loss = losses.linear_cross_entropy(h, w, labels, b) if fused else causal_lm_loss(h @ w.T + b, labels)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad, b.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    h = c.hidden.clone().requires_grad_(True)
    none = losses.linear_cross_entropy(h, c.weight, torch.full((3, 7), -100))
    none.backward()
    assert float(none) == 0.0 and bool((h.grad == 0).all())


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:  # new memory, not a view
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("teacher_kind", ["logits", "pair", "cache_tail"])
def test_no_tensor_of_all_tokens_by_the_vocabulary(teacher_kind, monkeypatch):
    """Forward and backward of a frozen output layer: no tensor larger than a block of logits."""
    monkeypatch.setattr(losses_from_hidden, "SUB_CHUNK_ELEMENTS", 1000)
    monkeypatch.setattr(losses_from_hidden, "HEAD_BLOCK_ELEMENTS", 2000)
    c = case(student_vocab=500, teacher_vocab=520, batch=4, seq=16, dtype=torch.float32)
    c.mask = torch.ones(4, 16)
    teacher, _ = teachers(c, teacher_kind, 1.0)
    h = c.hidden.clone().requires_grad_(True)
    with LargestTensor() as seen:
        losses.linear_kd_loss(h, c.weight, teacher, c.mask, "fkl").backward()
    tokens_by_vocab = 4 * 16 * 500
    assert seen.largest <= 2001 < tokens_by_vocab / 10


def test_bad_inputs_are_named():
    c = case()
    with pytest.raises(KdgridError, match="output-layer weight must be"):
        losses.linear_kd_loss(c.hidden, c.weight[:, :5], c.teacher_hidden @ c.teacher_weight.T, c.mask, "fkl")
    with pytest.raises(KdgridError, match="teacher's hidden states"):
        losses.linear_kd_loss(c.hidden, c.weight, (c.teacher_hidden[0], c.teacher_weight), c.mask, "fkl")
    with pytest.raises(KdgridError, match="teacher given as a tuple"):
        losses.linear_kd_loss(c.hidden, c.weight, (c.teacher_hidden,), c.mask, "fkl")
    with pytest.raises(KdgridError, match="mask shape"):
        losses.linear_kd_loss(c.hidden, c.weight, (c.teacher_hidden, c.teacher_weight), c.mask[:, :3], "fkl")
    with pytest.raises(KdgridError, match="at temperature"):
        losses.linear_kd_loss(c.hidden, c.weight, sparse(c, 1.0), c.mask, "fkl", 2.0)
    with pytest.raises(KdgridError, match="beta must be in"):
        losses.linear_kd_loss(c.hidden, c.weight, (c.teacher_hidden, c.teacher_weight), c.mask, "gkd", beta=2)
    with pytest.raises(KdgridError, match="KD method"):
        losses.linear_kd_loss(c.hidden, c.weight, (c.teacher_hidden, c.teacher_weight), c.mask, "nope")
    with pytest.raises(KdgridError, match="labels shape"):
        losses.linear_cross_entropy(c.hidden, c.weight, torch.zeros(3, 2, dtype=torch.long))


@pytest.mark.parametrize("need_grad", [True, False])
def test_at_most_two_blocks_of_logits_exist_at_once(need_grad, monkeypatch):
    # the student's block (then its gradient) and an online teacher's block: the previous block is gone
    # before the next one's logits are formed (one more block-sized tensor is 88 MiB at Qwen2.5's vocabulary)
    import weakref

    monkeypatch.setattr(losses_from_hidden, "HEAD_BLOCK_ELEMENTS", 100)  # 2 rows a block: 6 blocks
    formed, most_alive = [], []
    real_logits = losses_from_hidden._logits

    def counting(*args):
        most_alive.append(sum(ref() is not None for ref in formed))
        out = real_logits(*args)
        formed.append(weakref.ref(out))
        return out

    monkeypatch.setattr(losses_from_hidden, "_logits", counting)
    c = case()
    hidden = c.hidden.requires_grad_(need_grad)
    with torch.set_grad_enabled(need_grad):
        losses.linear_kd_loss(hidden, c.weight, (c.teacher_hidden, c.teacher_weight), c.mask, "fkl")
    assert len(formed) == 12 and max(most_alive) <= 1, most_alive

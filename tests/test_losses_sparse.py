"""kdgrid.losses with a SparseTeacher: value and gradient against autograd of the (k+1)-bucket
formula written out here in float64, on the edge cases of the lean path (ids outside the row,
rows without a rest, a student rest mass that underflows float32, scaled and repeated backward)."""

import math

import pytest
import torch

from kdgrid import losses
from kdgrid.teacher_cache import SparseTeacher
from loss_references import SETTINGS, divergence, loss_of, reduced, sparse_from_dense

torch.set_num_threads(1)

METHODS = list(SETTINGS)


def bucket_reference(name, s, teacher: SparseTeacher, mask):
    """The divergence between the (k+1)-bucket distributions, straightforwardly, in float64."""
    tau, width = teacher.temperature, teacher.width
    ids = teacher.topk_ids
    valid = (ids >= 0) & (ids < width)
    safe_ids = ids.clamp(0, width - 1)
    q = torch.softmax(s[..., :width].double() / tau, -1)
    in_top = torch.zeros(q.shape, dtype=torch.long).scatter_add(-1, safe_ids, valid.long()) > 0
    q_top = torch.where(valid, q.gather(-1, safe_ids), 0.0)
    q_rest = (q * (~in_top)).sum(-1, keepdim=True)
    teacher_logits = torch.cat([torch.where(valid, teacher.topk_logits.double() / tau, -math.inf),
                                teacher.rest_lse.double()[..., None]], -1)
    p = torch.softmax(teacher_logits, -1)
    q_b = torch.cat([q_top, q_rest], -1)
    return reduced(name, divergence(name, p, q_b), mask, tau)


def make_case(k=4, width=10, student_vocab=12, batch=3, seq=5, temperature=1.0, seed=0, invalid=True):
    """Student logits wider than the teacher's rows; teacher ids partly outside [0, width)."""
    g = torch.Generator().manual_seed(seed)
    teacher_full = torch.randn(batch, seq, width + 3, generator=g) * 3  # 3 padding rows past the width
    if not invalid:
        teacher_full[..., width:] = -1e4
    teacher = sparse_from_dense(teacher_full, k, temperature, width)
    s = torch.randn(batch, seq, student_vocab, generator=g) * 3
    mask = (torch.rand(batch, seq, generator=g) > 0.3).float()
    mask[0, 0] = 1
    teacher.topk_ids[mask == 0] = -1  # rows the mask leaves out need no cached row
    return s, teacher, mask


def value_and_grad(name, s, teacher, mask, scale=1.0):
    s = s.clone().requires_grad_(True)
    value = loss_of(name, s, teacher, mask, temperature=teacher.temperature)
    (value * scale).backward()
    return value.detach(), s.grad


def check_against_reference(name, s, teacher, mask, scale=1.0, rtol=1e-5, grad_rtol=1e-4):
    value, grad = value_and_grad(name, s, teacher, mask, scale)
    s_ref = s.double().requires_grad_(True)
    expected = bucket_reference(name, s_ref, teacher, mask)
    (expected * scale).backward()
    assert value.item() == pytest.approx(expected.item(), rel=rtol, abs=1e-7)
    torch.testing.assert_close(grad.double(), s_ref.grad, rtol=grad_rtol, atol=1e-7)
    return value, grad


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("chunk_elements", [1 << 22, 25], ids=["one_chunk", "many_chunks"])
def test_value_and_gradient_match_the_bucket_formula(name, temperature, chunk_elements, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    s, teacher, mask = make_case(temperature=temperature)
    assert bool(((teacher.topk_ids >= teacher.width) & (mask[..., None] > 0)).any())  # the case is exercised
    _, grad = check_against_reference(name, s, teacher, mask)
    assert not grad[mask == 0].any() and not grad[..., teacher.width:].any()


@pytest.mark.parametrize("name", METHODS)
def test_rows_without_a_rest(name):
    # k covers every token of the row (plus ids past the width): a k-bucket divergence
    s, teacher, mask = make_case(k=12, width=10, temperature=2.0)
    check_against_reference(name, s, teacher, mask)


@pytest.mark.parametrize("name", METHODS)
def test_student_rest_mass_below_float32_range(name):
    # the student puts all but ~e^-150 of its mass on the teacher's top tokens, the teacher 0.3 % on
    # the rest: the rest's log-mass must come out exactly (no log 0), as in float64
    s, teacher, mask = make_case(invalid=False)
    top = teacher.topk_ids.clamp(min=0)
    s = s.scatter_add(-1, top, torch.full(top.shape, 150.0))
    value, grad = check_against_reference(name, s, teacher, mask)
    assert math.isfinite(value.item()) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ["fkl", "rkl", "gkd_0.3", "tvd"])
def test_bfloat16_student(name):
    s, teacher, mask = make_case(temperature=2.0)
    s16 = s.bfloat16()
    value, grad = value_and_grad(name, s16, teacher, mask)
    assert value.dtype == torch.float32 and grad.dtype == torch.bfloat16
    s_ref = s16.double().requires_grad_(True)
    expected = bucket_reference(name, s_ref, teacher, mask)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), s_ref.grad, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("scale", [0.25, 3.0, -1.0])
def test_scaled_backward(scale):
    s, teacher, mask = make_case()
    _, grad = value_and_grad("fkl", s, teacher, mask)
    _, scaled = value_and_grad("fkl", s, teacher, mask, scale=scale)
    torch.testing.assert_close(scaled, grad * scale, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("first_scale", [0.25, 0.0])
def test_repeated_backward_with_retain_graph(first_scale):
    # the saved gradient is scaled in place by the first backward: a second one must still be right
    s, teacher, mask = make_case()
    _, expected = value_and_grad("rkl", s, teacher, mask)
    x = s.clone().requires_grad_(True)
    value = losses.reverse_kl(x, teacher, mask)
    (first,) = torch.autograd.grad(value * first_scale, x, retain_graph=True)
    first = first.clone()
    (second,) = torch.autograd.grad(value * 2.0, x)
    torch.testing.assert_close(first, expected * first_scale, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(second, expected * 2.0, rtol=1e-6, atol=0.0)


def test_dense_path_keeps_unmasked_rows_and_padding_columns_at_zero():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 4, 9, generator=g)
    t = torch.randn(2, 4, 7, generator=g)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 1]])
    x = s.clone().requires_grad_(True)
    (0.5 * losses.forward_kl(x, t, mask)).backward()
    assert not x.grad[mask == 0].any() and not x.grad[..., 7:].any()
    assert x.grad[mask == 1][:, :7].abs().min() > 0


@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_backward_hands_over_the_saved_gradient_without_a_copy(scale, sparse):
    s, teacher, mask = make_case()
    if not sparse:
        teacher = torch.randn(s.shape[:2] + (teacher.width,))
    x = s.clone().requires_grad_(True)
    value = losses.forward_kl(x, teacher, mask, temperature=teacher.temperature if sparse else 1.0)
    saved = value.grad_fn.saved_tensors[0].data_ptr()
    (value * scale).backward()
    assert x.grad.data_ptr() == saved

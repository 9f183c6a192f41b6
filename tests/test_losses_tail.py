"""The cache's tail samples: unbiased fkl / skew_kl / tvd from a top-k cache, gradients, and the format."""

from __future__ import annotations

import pytest
import torch

from kdgrid import losses
from kdgrid.errors import KdgridError
from kdgrid.teacher_cache import TeacherCache, compute_teacher_outputs
from loss_references import FixedTeacher, loss_of

torch.set_num_threads(1)
UNBIASED = ["fkl", "skew_kl", "tvd"]




def case(vocab=60, batch=3, seq=7, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, seq, vocab, generator=g) * spread
    student = torch.randn(batch, seq, vocab, generator=g) * spread
    mask = torch.ones(batch, seq)
    mask[1, :2] = 0
    return teacher, student, mask


def cached(teacher_logits, k, samples, temperature=1.0, seed=0, width=None, widths=None):
    examples = [[1] * teacher_logits.shape[1]] * teacher_logits.shape[0]
    cache = compute_teacher_outputs(FixedTeacher(teacher_logits), examples, k, [temperature], batch_size=len(examples),
                                    widths=widths, tail_samples=samples, seed=seed)
    return cache.batch(range(len(examples)), teacher_logits.shape[1], temperature, width=width)


def value_grad(method, student, teacher, mask, temperature=1.0):
    s = student.clone().requires_grad_(True)
    loss = loss_of(method, s, teacher, mask, temperature=temperature)
    loss.backward()
    return loss.item(), s.grad.flatten()


@pytest.mark.parametrize("method", list(UNBIASED))
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_tail_samples_remove_the_top_k_bias(method, temperature):
    teacher, student, mask = case()
    dense, dense_grad = value_grad(method, student, teacher, mask, temperature)
    bucket, _ = value_grad(method, student, cached(teacher, 4, 0, temperature), mask, temperature)
    sampled, sampled_grad = value_grad(method, student, cached(teacher, 4, 4000, temperature), mask, temperature)
    assert abs(bucket - dense) > 0.05 * dense  # the (k+1)-bucket value is far off on a flat teacher
    assert sampled == pytest.approx(dense, rel=0.02)
    assert torch.nn.functional.cosine_similarity(sampled_grad, dense_grad, dim=0) > 0.99


@pytest.mark.parametrize("method", list(UNBIASED))
def test_the_estimate_is_unbiased_over_seeds(method):
    teacher, student, mask = case(seed=3)
    dense, _ = value_grad(method, student, teacher, mask)
    values = [value_grad(method, student, cached(teacher, 4, 4, seed=seed), mask)[0] for seed in range(40)]
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    assert abs(mean - dense) < 4 * spread / len(values) ** 0.5 + 1e-6


@pytest.mark.parametrize("method", list(UNBIASED))
def test_tail_gradient_is_the_derivative_of_the_estimate(method):
    teacher, student, mask = case(vocab=12, batch=2, seq=3, seed=1)
    sparse = cached(teacher, 3, 5, seed=2)
    s = student.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: loss_of(method, x, sparse, mask), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("method,params", [("rkl", {}), ("gkd", {"beta": 0.5})])
def test_student_weighted_losses_keep_the_bucket_value(method, params):
    teacher, student, mask = case()
    without = losses.kd_loss(method, student, cached(teacher, 4, 0), mask, **params)
    with_tail = losses.kd_loss(method, student, cached(teacher, 4, 64), mask, **params)
    assert with_tail.item() == pytest.approx(without.item(), rel=1e-6)


def test_a_narrower_width_skips_samples_past_it():
    teacher, student, mask = case(vocab=64)
    teacher[..., 60:] = teacher[..., 60:] + 3  # padding rows the narrower student does not have, with real mass
    dense, _ = value_grad("fkl", student[..., :60], teacher[..., :60], mask)
    sparse = cached(teacher, 4, 4000, width=60, widths=[60, 64])
    assert bool((sparse.tail_ids >= 60).any())
    assert value_grad("fkl", student[..., :60], sparse, mask)[0] == pytest.approx(dense, rel=0.03)


def test_the_format_keeps_samples_and_the_teachers_rest_mass(tmp_path):
    teacher, _, _ = case()
    path = tmp_path / "c.pt"
    examples = [[1] * teacher.shape[1]] * teacher.shape[0]
    made = compute_teacher_outputs(FixedTeacher(teacher), examples, 4, [1.0, 2.0], batch_size=3, tail_samples=16, seed=7)
    made.save(path)
    cache = TeacherCache.load(path)
    assert cache.tail_samples == 16 and cache.tail_ids.shape == (2, 21, 16)
    assert cache.meta["bytes_per_token"] == 4 * 6 + 4 + 4 * 2 * 2 + 16 * 6 * 2
    rest = torch.softmax(teacher.reshape(-1, 60), -1).sort(-1, descending=True).values[:, 4:].sum(-1)
    assert cache.meta["fidelity"]["1"]["teacher_rest_mass_mean"] == pytest.approx(rest.mean().item(), rel=1e-4)
    assert cache.meta["fidelity"]["1"]["teacher_rest_mass_max"] == pytest.approx(rest.max().item(), rel=1e-4)
    again = compute_teacher_outputs(FixedTeacher(teacher), examples, 4, [1.0, 2.0], batch_size=3, tail_samples=16, seed=7)
    assert torch.equal(again.tail_ids, cache.tail_ids)  # the seed decides the samples
    top = cache.topk_ids.long()[:, None, :].expand(-1, 16, -1)
    assert not bool((cache.tail_ids[0].long()[..., None] == top).any())  # samples come from the rest only


def test_an_older_cache_format_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "kdgrid-teacher-outputs/1", "meta": {}}, path)
    with pytest.raises(KdgridError, match="older format .*rerun teacher-outputs"):
        TeacherCache.load(path)

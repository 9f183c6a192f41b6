"""kdgrid.losses against straightforward formulas written here (their means over positions in
tests/loss_references.py), independently of the module."""

import pytest
import torch

from kdgrid import losses
from kdgrid.errors import KdgridError
from loss_references import per_sequence_mean, token_mean

torch.set_num_threads(1)


# --- independent straightforward references ------------------------------------------------------

def ref_probs(logits, temperature):
    return torch.softmax(logits.double() / temperature, -1), torch.log_softmax(logits.double() / temperature, -1)


def ref_fkl(s, t, mask, temperature=1.0):
    w = min(s.shape[-1], t.shape[-1])
    _q, log_q = ref_probs(s[..., :w], temperature)
    p, log_p = ref_probs(t[..., :w], temperature)
    return per_sequence_mean((p * (log_p - log_q)).sum(-1), mask) * temperature**2


def ref_rkl(s, t, mask, temperature=1.0):
    w = min(s.shape[-1], t.shape[-1])
    q, log_q = ref_probs(s[..., :w], temperature)
    _p, log_p = ref_probs(t[..., :w], temperature)
    return per_sequence_mean((q * (log_q - log_p)).sum(-1), mask) * temperature**2


def ref_gjsd(s, t, mask, beta=0.5, temperature=1.0):
    w = min(s.shape[-1], t.shape[-1])
    q, log_q = ref_probs(s[..., :w], temperature)
    p, log_p = ref_probs(t[..., :w], temperature)
    if beta == 0:  # the GKD paper's JSD(beta) vanishes at its ends; there it is forward / reverse KL
        per_token = (p * (log_p - log_q)).sum(-1)
    elif beta == 1:
        per_token = (q * (log_q - log_p)).sum(-1)
    else:
        m = beta * p + (1 - beta) * q
        kl_p = (p * (log_p - m.log())).sum(-1)
        kl_q = (q * (log_q - m.log())).sum(-1)
        per_token = beta * kl_p + (1 - beta) * kl_q
    return token_mean(per_token, mask) * temperature**2


def ref_skew(s, t, mask, skew=0.1, temperature=1.0):
    w = min(s.shape[-1], t.shape[-1])
    q, _ = ref_probs(s[..., :w], temperature)
    p, log_p = ref_probs(t[..., :w], temperature)
    m = skew * p + (1 - skew) * q
    return per_sequence_mean((p * (log_p - m.log())).sum(-1), mask) * temperature**2


def ref_tvd(s, t, mask, temperature=1.0):
    w = min(s.shape[-1], t.shape[-1])
    q, _ = ref_probs(s[..., :w], temperature)
    p, _ = ref_probs(t[..., :w], temperature)
    return per_sequence_mean(0.5 * (p - q).abs().sum(-1), mask) * temperature**2


CASES = [
    ("fkl", losses.forward_kl, ref_fkl, {}),
    ("rkl", losses.reverse_kl, ref_rkl, {}),
    ("gkd", losses.generalized_jsd, ref_gjsd, {}),
    ("gkd_beta0.2", losses.generalized_jsd, ref_gjsd, {"beta": 0.2}),
    ("gkd_beta0.9", losses.generalized_jsd, ref_gjsd, {"beta": 0.9}),
    ("gkd_beta0", losses.generalized_jsd, ref_gjsd, {"beta": 0.0}),
    ("gkd_beta1", losses.generalized_jsd, ref_gjsd, {"beta": 1.0}),
    ("skew_kl", losses.skew_kl, ref_skew, {}),
    ("skew_kl_0.5", losses.skew_kl, ref_skew, {"skew": 0.5}),
    ("tvd", losses.tvd, ref_tvd, {}),
]
IDS = [c[0] for c in CASES]


def make_inputs(batch=3, seq=5, vocab=11, teacher_vocab=None, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, seq, vocab, generator=g) * scale
    t = torch.randn(batch, seq, teacher_vocab or vocab, generator=g) * scale
    mask = (torch.rand(batch, seq, generator=g) > 0.3).float()
    mask[0, 0] = 1
    return s, t, mask


def value_and_grad(fn, s, t, mask, **kw):
    s = s.clone().requires_grad_(True)
    loss = fn(s, t, mask, **kw)
    loss.backward()
    return loss.detach().double(), s.grad.double()


@pytest.fixture(params=[1 << 22, 24], ids=["one_chunk", "many_chunks"])
def chunk_elements(request, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", request.param)
    return request.param


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_value_and_gradient_match_reference(name, fn, ref, kw, temperature, chunk_elements):
    s, t, mask = make_inputs()
    value, grad = value_and_grad(fn, s, t, mask, temperature=temperature, **kw)
    s_ref = s.double().requires_grad_(True)
    expected = ref(s_ref, t.double(), mask, temperature=temperature, **kw)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, s_ref.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
def test_gradcheck_float64(name, fn, ref, kw, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 10)
    s, t, mask = make_inputs(batch=2, seq=3, vocab=5, scale=1.0)
    s = s.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, t.double(), mask, temperature=2.0, **kw).double(), (s,))


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
def test_masked_tokens_do_not_count(name, fn, ref, kw):
    s, t, mask = make_inputs()
    value, grad = value_and_grad(fn, s, t, mask, **kw)
    s2, t2 = s.clone(), t.clone()
    s2[mask == 0] = torch.randn_like(s2[mask == 0]) * 10
    t2[mask == 0] = torch.randn_like(t2[mask == 0]) * 10
    value2, grad2 = value_and_grad(fn, s2, t2, mask, **kw)
    assert value2 == pytest.approx(value.item(), rel=1e-6)
    assert torch.equal(grad2[mask == 0], torch.zeros_like(grad2[mask == 0]))
    torch.testing.assert_close(grad2[mask == 1], grad[mask == 1])


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
def test_all_masked_sequence_is_excluded(name, fn, ref, kw):
    s, t, mask = make_inputs()
    mask[1] = 0
    value, grad = value_and_grad(fn, s, t, mask, **kw)
    expected = ref(s.double(), t.double(), mask, **kw)
    assert value == pytest.approx(expected.item(), rel=1e-5)
    assert not grad[1].any()
    # dropping the empty sequence from the batch changes nothing for per-sequence losses
    keep = torch.tensor([0, 2])
    value_without, _ = value_and_grad(fn, s[keep], t[keep], mask[keep], **kw)
    assert value_without == pytest.approx(value.item(), rel=1e-5)


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
def test_no_masked_token_gives_zero(name, fn, ref, kw):
    s, t, mask = make_inputs()
    value, grad = value_and_grad(fn, s, t, torch.zeros_like(mask), **kw)
    assert value.item() == 0.0 and not grad.any()


def test_per_sequence_versus_token_mean():
    # a long and a short sequence: forward KL weighs sequences equally, GJSD weighs tokens equally
    s, t, _ = make_inputs(batch=2, seq=6)
    mask = torch.tensor([[1.0] * 6, [1, 0, 0, 0, 0, 0]])
    per_token = []
    for b, n in ((0, 6), (1, 1)):
        per_token.append(ref_fkl(s[b:b + 1, :n], t[b:b + 1, :n], torch.ones(1, n)).item())
    assert losses.forward_kl(s, t, mask).item() == pytest.approx(sum(per_token) / 2, rel=1e-5)
    assert losses.generalized_jsd(s, t, mask).item() == pytest.approx(ref_gjsd(s, t, mask).item(), rel=1e-5)
    assert losses.generalized_jsd(s, t, mask).item() != pytest.approx(
        per_sequence_mean(ref_gjsd_terms(s, t), mask).item(), rel=1e-3)


def ref_gjsd_terms(s, t):
    q, log_q = ref_probs(s, 1.0)
    p, log_p = ref_probs(t, 1.0)
    m = 0.5 * (p + q)
    return 0.5 * (p * (log_p - m.log())).sum(-1) + 0.5 * (q * (log_q - m.log())).sum(-1)


def test_temperature_squared_scaling():
    s, t, mask = make_inputs()
    for tau in (2.0, 5.0):
        unscaled = ref_fkl(s, t, mask, temperature=tau).item() / tau**2
        assert losses.forward_kl(s, t, mask, temperature=tau).item() == pytest.approx(unscaled * tau**2, rel=1e-5)
        # the scaled-down logits at temperature 1 give the same divergence, before the tau^2 factor
        assert losses.forward_kl(s / tau, t / tau, mask).item() == pytest.approx(unscaled, rel=1e-5)


def test_gjsd_endpoints_are_forward_and_reverse_kl():
    # the GKD paper's assignment: beta 0 forward KL(p_T || p_S), beta 1 reverse KL(p_S || p_T)
    s, t, mask = make_inputs()
    mask = torch.ones_like(mask)  # all sequences equally long: token mean equals per-sequence mean
    for beta, kl in ((0.0, losses.forward_kl), (1.0, losses.reverse_kl)):
        value, grad = value_and_grad(losses.generalized_jsd, s, t, mask, beta=beta, temperature=2.0)
        kl_value, kl_grad = value_and_grad(kl, s, t, mask, temperature=2.0)
        assert value.item() == pytest.approx(kl_value.item(), rel=1e-6)
        torch.testing.assert_close(grad, kl_grad, rtol=1e-6, atol=0)


def test_gjsd_runs_from_forward_to_reverse_kl_and_shrinks_near_the_ends():
    s, t, mask = (x.double() for x in make_inputs())
    fkl, rkl = ref_gjsd(s, t, mask, beta=0.0).item(), ref_gjsd(s, t, mask, beta=1.0).item()
    for beta in (1e-5, 1e-3, 0.1, 0.5, 0.9, 1 - 1e-3, 1 - 1e-5):
        # convexity of KL in its second argument: JSD(beta) <= beta (1 - beta) (fkl + rkl)
        assert losses.generalized_jsd(s, t, mask, beta=beta).item() <= beta * (1 - beta) * (fkl + rkl)
    # to first order JSD(beta) = beta fkl near 0 and (1 - beta) rkl near 1: the loss scale vanishes there
    assert losses.generalized_jsd(s, t, mask, beta=1e-5).item() == pytest.approx(1e-5 * fkl, rel=0.05)
    assert losses.generalized_jsd(s, t, mask, beta=1 - 1e-5).item() == pytest.approx(1e-5 * rkl, rel=0.05)


def test_identical_distributions_give_zero():
    s, _, mask = make_inputs()
    for name, fn in losses.LOSSES.items():
        assert abs(fn(s, s.clone(), mask).item()) < 1e-6, name


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
@pytest.mark.parametrize("student_vocab,teacher_vocab", [(11, 14), (14, 11)])
def test_mismatched_vocab_widths_are_sliced(name, fn, ref, kw, student_vocab, teacher_vocab):
    s, t, mask = make_inputs(vocab=student_vocab, teacher_vocab=teacher_vocab)
    value, grad = value_and_grad(fn, s, t, mask, **kw)
    width = min(student_vocab, teacher_vocab)
    s_ref = s.double().requires_grad_(True)
    expected = ref(s_ref, t.double(), mask, **kw)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, s_ref.grad, rtol=1e-4, atol=1e-7)
    assert grad.shape == s.shape and not grad[..., width:].any()


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
def test_bfloat16_inputs(name, fn, ref, kw):
    s, t, mask = make_inputs()
    s16, t16 = s.bfloat16(), t.bfloat16()
    s_in = s16.clone().requires_grad_(True)
    value = fn(s_in, t16, mask, **kw)
    value.backward()
    assert value.dtype == torch.float32 and s_in.grad.dtype == torch.bfloat16
    s_ref = s16.double().requires_grad_(True)
    expected = ref(s_ref, t16.double(), mask, **kw)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(s_in.grad.double(), s_ref.grad, rtol=1e-2, atol=1e-4)


def test_backward_with_a_scaled_loss_and_through_a_graph():
    s, t, mask = make_inputs()
    weight = torch.randn(s.shape[-1], s.shape[-1], dtype=torch.float64, requires_grad=True)
    hidden = s.double()
    loss = 0.3 * losses.forward_kl((hidden @ weight).float(), t, mask, temperature=2.0)
    loss.backward()
    weight_ref = weight.detach().clone().requires_grad_(True)
    (0.3 * ref_fkl(hidden @ weight_ref, t.double(), mask, temperature=2.0)).backward()
    torch.testing.assert_close(weight.grad, weight_ref.grad, rtol=1e-4, atol=1e-7)


def test_no_grad_and_detached_student():
    s, t, mask = make_inputs()
    with torch.no_grad():
        value = losses.forward_kl(s.requires_grad_(True), t, mask)
    assert not value.requires_grad
    assert value.item() == pytest.approx(ref_fkl(s.detach(), t, mask).item(), rel=1e-5)


def test_teacher_gets_no_gradient():
    s, t, mask = make_inputs()
    t = t.requires_grad_(True)
    losses.reverse_kl(s.requires_grad_(True), t, mask).backward()
    assert t.grad is None and s.grad is not None


def test_dispatcher_and_mix():
    s, t, mask = make_inputs()
    assert losses.kd_loss("rkl", s, t, mask, temperature=2.0).item() == pytest.approx(
        ref_rkl(s, t, mask, temperature=2.0).item(), rel=1e-5)
    assert losses.kd_loss("gkd", s, t, mask, beta=0.3).item() == pytest.approx(
        ref_gjsd(s, t, mask, beta=0.3).item(), rel=1e-5)
    with pytest.raises(KdgridError, match="unknown KD method 'kl2'"):
        losses.kd_loss("kl2", s, t, mask)
    ce, kd = torch.tensor(2.0), torch.tensor(4.0)
    assert losses.mix_with_ce(ce, kd, 0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 4)
    assert losses.mix_with_ce(None, kd, 1.0) is kd
    with pytest.raises(KdgridError, match="cross-entropy"):
        losses.mix_with_ce(None, kd, 0.5)


def test_bad_inputs_are_refused():
    s, t, mask = make_inputs()
    with pytest.raises(KdgridError, match="mask shape"):
        losses.forward_kl(s, t, mask[:, :-1])
    with pytest.raises(KdgridError, match="does not match"):
        losses.forward_kl(s, t[:, :-1], mask)
    with pytest.raises(KdgridError, match="temperature"):
        losses.forward_kl(s, t, mask, temperature=0.0)
    with pytest.raises(KdgridError, match="beta"):
        losses.generalized_jsd(s, t, mask, beta=1.5)
    with pytest.raises(KdgridError, match="skew"):
        losses.skew_kl(s, t, mask, skew=-0.1)


def test_loss_does_not_keep_per_chunk_intermediates(monkeypatch):
    # The graph is one node straight onto the student logits, holding one saved tensor: the gradient.
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 22)
    s, t, mask = make_inputs(vocab=11)
    s.requires_grad_(True)
    for fn in losses.LOSSES.values():
        loss = fn(s, t, mask)
        assert [x.shape for x in loss.grad_fn.saved_tensors] == [s.shape]
        assert [type(f).__name__ for f, _ in loss.grad_fn.next_functions if f is not None] == ["AccumulateGrad"]


@pytest.mark.parametrize("name,fn,ref,kw", CASES, ids=IDS)
def test_minus_infinity_teacher_logits(name, fn, ref, kw):
    # a teacher that rules tokens out (-inf logits): zero probabilities, finite loss and gradients
    s, t, mask = make_inputs()
    t[..., :3] = -float("inf")
    value, grad = value_and_grad(fn, s, t, mask, **kw)
    if name.startswith("rkl") or kw.get("beta") == 1.0:  # reverse KL (gkd at beta 1 is reverse KL)
        assert value.item() == float("inf")  # the student puts mass where the teacher has none
        return
    assert torch.isfinite(grad).all()
    # the reference's limit: a logit of -1e4 has probability exactly 0 in float64
    s_ref = s.double().requires_grad_(True)
    expected = ref(s_ref, t.double().clamp(min=-1e4), mask, **kw)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, s_ref.grad, rtol=1e-4, atol=1e-7)

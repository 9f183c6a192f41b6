"""kdgrid.teacher_cache and the losses' sparse-teacher path."""

import math
from types import SimpleNamespace

import pytest
import torch

from kdgrid import losses, teacher_cache
from kdgrid.errors import KdgridError
from kdgrid.teacher_cache import TeacherCache, compute_teacher_outputs
from loss_references import divergence, loss_of, reduced, sparse_from_dense

torch.set_num_threads(1)

METHODS = ["fkl", "rkl", "gkd", "gkd_0.3", "skew_kl", "tvd"]


def collapsed_reference(name, s, t, ids, mask, temperature):
    """The divergence between (k+1)-bucket distributions, computed from dense probabilities in float64."""
    q = torch.softmax(s.double() / temperature, -1)
    p = torch.softmax(t.double() / temperature, -1)
    q_top, p_top = q.gather(-1, ids), p.gather(-1, ids)
    q_b = torch.cat([q_top, (1 - q_top.sum(-1, keepdim=True)).clamp(min=0)], -1)
    p_b = torch.cat([p_top, (1 - p_top.sum(-1, keepdim=True)).clamp(min=0)], -1)
    return reduced(name, divergence(name, p_b, q_b), mask, temperature)


def make_inputs(batch=2, seq=6, vocab=12, seed=0, scale=2.0, peak=0.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, seq, vocab, generator=g) * scale
    t = torch.randn(batch, seq, vocab, generator=g) * scale
    t[..., :3] += peak  # a few dominant tokens: peaked teacher and student
    s[..., :3] += peak
    mask = torch.ones(batch, seq)
    mask[-1, 4:] = 0
    return s, t, mask


def value_and_grad(name, s, teacher, mask, temperature):
    s = s.clone().requires_grad_(True)
    value = loss_of(name, s, teacher, mask, temperature=temperature)
    value.backward()
    return value.detach(), s.grad


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_with_k_equal_vocab_is_the_dense_loss(name, temperature):
    s, t, mask = make_inputs()
    dense_value, dense_grad = value_and_grad(name, s, t, mask, temperature)
    sparse = sparse_from_dense(t, k=t.shape[-1], temperature=temperature)
    sparse_value, sparse_grad = value_and_grad(name, s, sparse, mask, temperature)
    assert sparse_value.item() == pytest.approx(dense_value.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("chunk_elements", [1 << 22, 30])
def test_sparse_is_the_collapsed_divergence(name, chunk_elements, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    s, t, mask = make_inputs()
    sparse = sparse_from_dense(t, k=4, temperature=2.0)
    value, grad = value_and_grad(name, s, sparse, mask, 2.0)
    s_ref = s.double().requires_grad_(True)
    expected = collapsed_reference(name, s_ref, t, sparse.topk_ids, mask, 2.0)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), s_ref.grad, rtol=1e-4, atol=1e-7)
    # collapsing outcomes never increases an f-divergence
    assert value.item() <= loss_of(name, s, t, mask, temperature=2.0).item() + 1e-6


def test_forward_kl_gap_is_teacher_rest_mass_times_tail_kl():
    s, t, mask = make_inputs(batch=1, seq=1, vocab=30)
    sparse = sparse_from_dense(t, k=5, temperature=1.0)
    q, p = torch.softmax(s.double(), -1)[0, 0], torch.softmax(t.double(), -1)[0, 0]
    tail = torch.ones(30, dtype=torch.bool)
    tail[sparse.topk_ids[0, 0]] = False
    r_p, r_q = p[tail].sum(), q[tail].sum()
    tail_kl = ((p[tail] / r_p) * ((p[tail] / r_p).log() - (q[tail] / r_q).log())).sum()
    gap = losses.forward_kl(s, t, mask).item() - losses.forward_kl(s, sparse, mask).item()
    assert gap == pytest.approx((r_p * tail_kl).item(), rel=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_large_k_on_peaked_distributions_is_close(name):
    # (the reverse-KL gap is r_S * KL(q_tail || p_tail): small only when the student is peaked too)
    s, t, mask = make_inputs(vocab=200, scale=1.0, peak=8.0)
    dense_value, dense_grad = value_and_grad(name, s, t, mask, 1.0)
    sparse_value, sparse_grad = value_and_grad(name, s, sparse_from_dense(t, 64, 1.0), mask, 1.0)
    assert sparse_value.item() == pytest.approx(dense_value.item(), rel=0.05)
    cosine = torch.nn.functional.cosine_similarity(sparse_grad.flatten(), dense_grad.flatten(), dim=0)
    assert cosine > 0.98


def test_sparse_teacher_checks():
    s, t, mask = make_inputs()
    sparse = sparse_from_dense(t, 4, 2.0)
    with pytest.raises(KdgridError, match="temperature 2.0"):
        losses.forward_kl(s, sparse, mask, temperature=1.0)
    narrow = s[..., :10]
    with pytest.raises(KdgridError, match="student's width"):
        losses.forward_kl(narrow, sparse, mask, temperature=2.0)
    sparse.topk_ids[1, 2] = -1  # a padding row the mask selects
    with pytest.raises(KdgridError, match="no row for"):
        losses.forward_kl(s, sparse, mask, temperature=2.0)
    mask[1, 2] = 0
    assert torch.isfinite(losses.forward_kl(s, sparse, mask, temperature=2.0))


# --- the cache ----------------------------------------------------------------------------------

class PrefixMeanLM(torch.nn.Module):
    """A deterministic causal 'language model': logits at t depend on tokens 0..t only."""

    def __init__(self, vocab=16, width=20, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(vocab, 8, generator=g))
        self.head = torch.nn.Parameter(torch.randn(8, width, generator=g) * 2)

    def forward(self, input_ids, attention_mask=None):
        h = self.embed[input_ids].cumsum(1) / torch.arange(1, input_ids.shape[1] + 1)[None, :, None]
        return SimpleNamespace(logits=h @ self.head)


EXAMPLES = [[1, 2, 3, 4, 5], [6, 7], [3, 3, 3, 9, 1, 2, 8], [15]]


def dense_rows(model, examples):
    return [model(torch.tensor([e])).logits[0].detach() for e in examples]


@pytest.fixture
def cache_file(tmp_path):
    model = PrefixMeanLM()
    cache = compute_teacher_outputs(model, EXAMPLES, k=6, temperatures=[1.0, 2.0], batch_size=3, device="cpu",
                                    widths=[14, 20])
    cache.meta.update(teacher="prefix-mean", tokenizer_fingerprint="abc")
    path = tmp_path / "topk6.pt"
    cache.save(path)
    return path, model


def test_round_trip_matches_the_model(cache_file):
    path, model = cache_file
    cache = TeacherCache.load(path)
    assert len(cache) == 4 and cache.k == 6 and cache.temperatures == [1.0, 2.0] and cache.vocab_width == 20
    assert cache.meta["teacher"] == "prefix-mean" and cache.widths == [14, 20]
    rows = dense_rows(model, EXAMPLES)
    order = [2, 0, 3]
    batch = cache.batch(order, seq_len=8, temperature=2.0, input_ids=[EXAMPLES[i] for i in order])
    assert batch.topk_logits.shape == (3, 8, 6) and batch.width == 20 and batch.temperature == 2.0
    for b, i in enumerate(order):
        n = len(EXAMPLES[i])
        values, ids = rows[i].topk(6, -1)
        assert torch.equal(batch.topk_ids[b, :n], ids)
        torch.testing.assert_close(batch.topk_logits[b, :n], values, atol=1e-2, rtol=0)
        torch.testing.assert_close(batch.lse[b, :n], (rows[i] / 2).logsumexp(-1))
        rest = (rows[i] / 2).scatter(-1, ids, -math.inf).logsumexp(-1)
        torch.testing.assert_close(batch.rest_lse[b, :n], rest)
        assert (batch.topk_ids[b, n:] == -1).all()


def test_cache_losses_equal_dense_losses_when_k_is_the_vocabulary(tmp_path):
    model = PrefixMeanLM(width=20)
    path = tmp_path / "full.pt"
    compute_teacher_outputs(model, EXAMPLES, k=20, temperatures=[2.0], batch_size=2, widths=[14, 20]).save(path)
    cache = TeacherCache.load(path)
    order = [0, 2]
    seq = 7
    teacher = torch.zeros(2, seq, 20)
    mask = torch.zeros(2, seq)
    for b, i in enumerate(order):
        teacher[b, :len(EXAMPLES[i])] = dense_rows(model, EXAMPLES)[i]
        mask[b, :len(EXAMPLES[i])] = 1
    student = torch.randn(2, seq, 20, generator=torch.Generator().manual_seed(3))
    for name in METHODS:
        dense = loss_of(name, student, teacher, mask, temperature=2.0)
        sparse = loss_of(name, student, cache.batch(order, seq, 2.0), mask, temperature=2.0)
        # float16 deltas: |logit error| <= |delta| * 2^-11
        assert sparse.item() == pytest.approx(dense.item(), rel=2e-3), name
    # a narrower student (14 logits, the teacher's 20 sliced) against the cache at width 14
    narrow = student[..., :14]
    for name in METHODS:
        dense = loss_of(name, narrow, teacher, mask, temperature=2.0)
        sparse = loss_of(name, narrow, cache.batch(order, seq, 2.0, width=14), mask, temperature=2.0)
        assert sparse.item() == pytest.approx(dense.item(), rel=2e-3), name


def test_misaligned_examples_are_detected(cache_file):
    cache = TeacherCache.load(cache_file[0])
    cache.check_examples(EXAMPLES)
    with pytest.raises(KdgridError, match="example 1 differs"):
        cache.batch([1], seq_len=4, temperature=1.0, input_ids=[[6, 8]])
    with pytest.raises(KdgridError, match="example 2 differs"):
        cache.check_examples([EXAMPLES[0], EXAMPLES[1], EXAMPLES[2][:-1], EXAMPLES[3]])
    with pytest.raises(KdgridError, match="cached 4 examples"):
        cache.check_examples(EXAMPLES[:3])
    with pytest.raises(KdgridError, match="more than the batch's 4"):
        cache.batch([0], seq_len=4, temperature=1.0)
    with pytest.raises(KdgridError, match="out of range"):
        cache.batch([4], seq_len=8, temperature=1.0)


def test_uncached_temperature_and_width_are_refused(cache_file):
    cache = TeacherCache.load(cache_file[0])
    with pytest.raises(KdgridError, match=r"temperature 5.0; cached temperatures: 1.0, 2.0"):
        cache.batch([0], seq_len=8, temperature=5.0)
    with pytest.raises(KdgridError, match="width 12"):
        cache.batch([0], seq_len=8, temperature=1.0, width=12)
    assert cache.batch([0], seq_len=8, temperature=1.0, width=30).width == 20


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(KdgridError, match="not found"):
        TeacherCache.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a cache")
    with pytest.raises(KdgridError, match="junk.pt"):
        TeacherCache.load(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(KdgridError, match="not a teacher-output cache"):
        TeacherCache.load(tmp_path / "other.pt")


def test_bad_arguments_are_refused():
    model = PrefixMeanLM()
    with pytest.raises(KdgridError, match="top-k"):
        compute_teacher_outputs(model, EXAMPLES, k=21, temperatures=[1.0])
    with pytest.raises(KdgridError, match="temperatures"):
        compute_teacher_outputs(model, EXAMPLES, k=4, temperatures=[0.0])
    with pytest.raises(KdgridError, match="non-empty"):
        compute_teacher_outputs(model, [[1], []], k=4, temperatures=[1.0])


def test_save_is_atomic(cache_file, monkeypatch):
    path, model = cache_file
    before = path.read_bytes()
    cache = compute_teacher_outputs(model, EXAMPLES[:2], k=3, temperatures=[1.0])

    def killed(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_cache.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_default_widths_cover_padded_output_layers():
    assert teacher_cache.default_widths(152064, 151665) == [151680, 151808, 151936, 152064]
    assert teacher_cache.default_widths(896, 700) == [768, 896]

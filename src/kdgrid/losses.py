"""Knowledge-distillation losses: small pure functions of student and teacher logits.

Every loss takes `student_logits` [batch, seq, vocab] (any float dtype; computed in float32), the
teacher's logits in the same shape (or a `kdgrid.teacher_cache.SparseTeacher`, the teacher's top-k
outputs read from the cache) and a 0/1 `mask` [batch, seq] of the tokens that count. It returns a
scalar differentiable w.r.t. the student logits; the teacher is a constant. With
p = softmax(logits / temperature):

- forward_kl: sum_v p_T (log p_T - log p_S) per token. The paper calls this SeqKD.
- reverse_kl: sum_v p_S (log p_S - log p_T) per token. The paper's RevKD.
- generalized_jsd: GKD's JSD(beta) as the GKD paper (Agarwal et al. 2024, eq. 1) and TRL >= 1.0
  define it: M = beta p_T + (1 - beta) p_S, per token beta KL(p_T || M) + (1 - beta) KL(p_S || M).
  The formula vanishes at both ends, so there, as in TRL, the loss is forward KL (beta = 0) and
  reverse KL (beta = 1) exactly. Between them it runs from forward-KL-like to reverse-KL-like, and its
  scale shrinks near either end (about beta KL(p_T || p_S) for small beta, (1 - beta) KL(p_S || p_T)
  near 1). Before loss version 2 (`kdgrid.methods`, Method.loss_version) kdgrid weighted the mixture
  the other way round (M = beta p_S + (1 - beta) p_T, TRL 0.13-0.15), the same function only at beta 0.5.
  The paper's code ignored the temperature for GKD; ours applies it like the others.
- skew_kl: DistiLLM's skewed forward KL, KL(p_T || skew p_T + (1 - skew) p_S).
- tvd: total variation, 0.5 sum_v |p_T - p_S|.

Averaging: generalized_jsd averages over all masked tokens of the batch; the others average over
the masked tokens of each sequence, then over the sequences that have at least one masked token.
Every loss is multiplied by temperature². A batch without any masked token has loss 0.

Vocabulary widths: Qwen2.5 0.5B-3B have 151936 logits, 7B-14B 152064 over the same tokenizer; the
extra rows are padding (no token has those ids), so both sides are sliced to the shared width.

Memory: a straightforward loss materialises several [tokens, vocab] float32 tensors, forward and
backward (gigabytes at a 152k vocabulary). Here the masked tokens are processed in chunks of rows;
each chunk's loss and its gradient w.r.t. the student's logits are computed in the forward pass,
and only that gradient (one tensor shaped like the student logits) is kept for backward, which
scales it in place (no double differentiation; a retain_graph backward run again still works).
With a SparseTeacher only the [rows, k+1] bucket values go through autograd: per chunk, one softmax
over the student's rows outside the teacher's top-k, gathers at the top-k ids, and the full-row
gradient written in place (see `_sparse_chunk`).

With a SparseTeacher the divergence is taken between the (k+1)-bucket collapsed distributions: the
k cached tokens exactly, plus one "rest" bucket with the remaining probability mass, for teacher and
student alike. Collapsing outcomes can only shrink an f-divergence (all the losses above are
f-divergences), so the sparse value is <= the dense one; for forward KL the gap is exactly
r_T * KL(p_T restricted to the rest || p_S restricted to the rest), r_T the teacher's rest mass.

A SparseTeacher with tail samples (ids drawn from the teacher's distribution over the rest) closes
that gap for the losses whose tail is an expectation under the teacher: the rest bucket's term is
replaced by an importance-sampling estimate of the rest's exact contribution, sum over rest v of
g(p_T(v), p_S(v)) = r_T E_{v ~ p_T | rest}[g(p_T(v), p_S(v)) / p_T(v)], which makes the loss and its
gradient unbiased (random-sampling KD, Anshumann et al. 2025, applied to the tail only):
- forward KL: r_T mean(log p_T(v) - log p_S(v));
- skew KL: r_T mean(log p_T(v) - log(skew p_T(v) + (1 - skew) p_S(v))) (bounded by log(1/skew));
- TVD, written 0.5 (r_T + r_S) - sum_rest min(p_T, p_S): 0.5 (r_T + r_S) - r_T mean(min(1, p_S(v) / p_T(v)))
  (a bounded estimator, where the plain |1 - p_S/p_T| one is not).
Reverse KL and GKD weigh the rest by the student (p_S/p_T is unbounded where the teacher has almost
no mass), so no low-variance estimator from the teacher's samples exists: they keep the bucket value,
and the cache's measured error decides whether a cell may use it (docs/teacher_cache.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import KdgridError
from .methods import REGISTRY, get_method
from .teacher_cache import SparseTeacher

# Elements (rows x vocab) of one chunk: 4M float32 = 16 MiB per intermediate, about 27 rows at 152k.
CHUNK_ELEMENTS = 1 << 22

Teacher = torch.Tensor | SparseTeacher


# --- per-token divergences between log-probability rows [n, buckets] -> [n] -------------------

def _xlogratio(log_a: torch.Tensor, log_b: torch.Tensor, zeros: bool) -> torch.Tensor:
    """a * (log a - log b) elementwise; 0 where a = 0, with zero (not NaN) gradients there.
    `zeros` False promises no -inf log-probability (finite logits, dense rows): the plain formula."""
    if not zeros:
        return log_a.exp() * (log_a - log_b)
    a_is_zero = torch.isneginf(log_a)
    log_a = log_a.masked_fill(a_is_zero, 0.0)
    log_b = log_b.masked_fill(a_is_zero, 0.0)
    return (log_a.exp() * (log_a - log_b)).masked_fill(a_is_zero, 0.0)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float, zeros: bool) -> torch.Tensor:
    """log(weight_a * a + (1 - weight_a) * b)."""
    if weight_a == 0.0:
        return log_b
    if weight_a == 1.0:
        return log_a
    if not zeros:
        return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))
    both_zero = torch.isneginf(log_a) & torch.isneginf(log_b)
    mixed = torch.logaddexp(
        log_a.masked_fill(both_zero, 0.0) + math.log(weight_a),
        log_b.masked_fill(both_zero, 0.0) + math.log1p(-weight_a),
    )
    return mixed.masked_fill(both_zero, -math.inf)


def _forward_kl_terms(log_q: torch.Tensor, log_p: torch.Tensor, zeros: bool) -> torch.Tensor:
    return _xlogratio(log_p, log_q, zeros).sum(-1)


def _reverse_kl_terms(log_q: torch.Tensor, log_p: torch.Tensor, zeros: bool) -> torch.Tensor:
    return _xlogratio(log_q, log_p, zeros).sum(-1)


def _tvd_terms(log_q: torch.Tensor, log_p: torch.Tensor, zeros: bool) -> torch.Tensor:
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def _skew_kl_terms(skew: float) -> Callable:
    def terms(log_q: torch.Tensor, log_p: torch.Tensor, zeros: bool) -> torch.Tensor:
        return _xlogratio(log_p, _log_mixture(log_p, log_q, skew, zeros), zeros).sum(-1)

    return terms


def _generalized_jsd_terms(beta: float) -> Callable:
    if beta == 0.0:
        return _forward_kl_terms
    if beta == 1.0:
        return _reverse_kl_terms

    def terms(log_q: torch.Tensor, log_p: torch.Tensor, zeros: bool) -> torch.Tensor:
        log_m = _log_mixture(log_p, log_q, beta, zeros)  # beta p_T + (1 - beta) p_S
        return (beta * _xlogratio(log_p, log_m, zeros).sum(-1)
                + (1.0 - beta) * _xlogratio(log_q, log_m, zeros).sum(-1))

    return terms


# --- the rest of a SparseTeacher from its tail samples: per row, the estimate of the rest's exact
# contribution, from the full-row log-probabilities at the sampled ids (teacher lp, student lq, [n, S]),
# `mean` (the average over each row's usable samples) and the rest buckets' log masses [n] ----------

def _forward_kl_tail(lp, lq, mean, log_rest_t, log_rest_s):
    return log_rest_t.exp() * mean(lp - lq)


def _skew_kl_tail(skew: float) -> Callable:
    def tail(lp, lq, mean, log_rest_t, log_rest_s):
        return log_rest_t.exp() * mean(lp - _log_mixture(lp, lq, skew, False))

    return tail


def _tvd_tail(lp, lq, mean, log_rest_t, log_rest_s):
    rest_t, rest_s = log_rest_t.exp(), log_rest_s.exp()
    return 0.5 * (rest_t + rest_s) - rest_t * mean((lq - lp).clamp(max=0.0).exp())


def _tail_correction(tail, terms, log_q, log_p, lq, lp, usable, zeros):
    """Per row: the tail estimate minus the rest bucket's own term, 0 for a row without a usable sample.
    log_q, log_p [n, k+1]: bucket log-probabilities, rest last; lq, lp [n, S]: at the sampled ids."""
    count = usable.sum(1)
    weight = usable.to(lq.dtype) / count.clamp(min=1)[:, None]

    def mean(x):
        return (x * weight).sum(1)

    estimate = tail(lp, lq, mean, log_p[:, -1], log_q[:, -1])
    return torch.where(count > 0, estimate - terms(log_q[:, -1:], log_p[:, -1:], zeros), 0.0)


# --- one chunk of rows: its weighted loss and the gradient w.r.t. the student's rows ------------

def _dense_chunk(student, teacher, weights, terms, temperature, need_grad, zeros):
    """student, teacher: [n, width] rows in the compute dtype -> (loss, gradient [n, width] or None)."""
    with torch.enable_grad():
        student.requires_grad_(need_grad)
        log_q = torch.log_softmax(student / temperature, -1)
        log_p = torch.log_softmax(teacher / temperature, -1)
        loss = (terms(log_q, log_p, zeros) * weights).sum()
    if not need_grad:
        return loss.detach(), None
    (grad,) = torch.autograd.grad(loss, student)
    return loss.detach(), grad


def _sparse_chunk(buffer, student_rows, chunk, topk_logits, topk_ids, rest_lse, weights, terms, temperature, need_grad,
                  tail=None, tail_logits=None, tail_ids=None):
    """The (k+1)-bucket divergence of the student's rows `chunk` (n of them, `width` wide): the
    teacher's top-k tokens, then the rest. Returns (loss, gradient w.r.t. the rows, a view into `buffer`, or None).

    `buffer` is flat working memory; its first n * width elements take the student's rows divided by
    the temperature (s), then the gradient. Its last element lies outside the rows: cached ids
    outside [0, width) (teacher padding rows) read and write there and get probability 0 on both
    sides. Ids within a row are distinct (a top-k). Both sides are renormalised over the buckets.

    Only bucket values go through autograd. With the student's bucket logits (s at the top ids, and
    rest = logsumexp of s over the other ids) and G = dloss/d(bucket logits), the chain rule gives
    dloss/ds_j = G_b for the top id j of bucket b, and G_rest * softmax over the rest of s, at j, for
    any other j.

    With tail samples (`tail` the method's estimator, `tail_logits`/`tail_ids` [n, S]) the rest bucket's
    term is replaced by the estimate (`_tail_correction`); the student's logits at the sampled ids go
    through autograd too and their gradient is added at those ids.
    """
    n, width = chunk.numel(), student_rows.shape[1]
    work = buffer[: n * width].view(n, width)
    if student_rows.dtype == work.dtype:
        torch.index_select(student_rows, 0, chunk, out=work)
    else:
        work.copy_(student_rows.index_select(0, chunk))
    if temperature != 1.0:
        work.div_(temperature)
    trash = buffer.numel() - 1
    valid = (topk_ids >= 0) & (topk_ids < width)
    has_rest = valid.sum(1) < width
    row_starts = torch.arange(0, n * width, width, device=buffer.device)
    flat_ids = torch.where(valid, row_starts[:, None] + topk_ids, trash).reshape(-1)
    sampled = tail is not None and tail_ids is not None and tail_ids.shape[1] > 0
    if sampled:
        usable = (tail_ids >= 0) & (tail_ids < width)
        flat_tail = torch.where(usable, row_starts[:, None] + tail_ids, trash).reshape(-1)
        student_tail = buffer[flat_tail].view(n, -1)

    student_top = buffer[flat_ids].view(n, -1).masked_fill(~valid, -math.inf)
    buffer.index_fill_(0, flat_ids, -math.inf)
    rest_max = work.amax(1)
    no_rest = torch.isneginf(rest_max)  # the top-k covers the row, or the rest's logits are all -inf
    buffer.index_fill_(0, torch.where(no_rest, row_starts, trash), 0.0)  # keeps such a row's softmax finite
    rest_probs = torch.softmax(work, 1)  # 0 at the top ids
    # the rest's log-sum-exp: at its largest logit, softmax = exp(rest_max - rest_lse)
    student_rest = (rest_max - rest_probs.amax(1).log()).masked_fill(no_rest, -math.inf)

    teacher_top = (topk_logits / temperature).masked_fill(~valid, -math.inf)
    teacher_rest = rest_lse.masked_fill(~has_rest, -math.inf)
    log_p = torch.log_softmax(torch.cat([teacher_top, teacher_rest[:, None]], 1), 1)
    student_buckets = torch.cat([student_top, student_rest[:, None]], 1)
    # Empty buckets (ids past the width, no rest, -inf logits) need the divergences' zero guards.
    # Looking costs a host synchronisation per chunk, so only the CPU looks.
    zeros = student_buckets.device.type != "cpu" or not bool(
        torch.isfinite(student_buckets).all() & torch.isfinite(log_p).all())
    with torch.enable_grad():
        student_buckets.requires_grad_(need_grad)
        log_q = torch.log_softmax(student_buckets, 1)
        per_row = terms(log_q, log_p, zeros)
        if sampled:
            student_tail.requires_grad_(need_grad)
            teacher_lse = torch.logsumexp(torch.cat([teacher_top, teacher_rest[:, None]], 1), 1)
            lp = (tail_logits / temperature - teacher_lse[:, None]).masked_fill(~usable, 0.0)
            lq = (student_tail - torch.logsumexp(student_buckets, 1)[:, None]).masked_fill(~usable, 0.0)
            per_row = per_row + _tail_correction(tail, terms, log_q, log_p, lq, lp, usable, zeros)
        loss = (per_row * weights).sum()
    if not need_grad:
        return loss.detach(), None
    if sampled:
        bucket_grad, tail_grad = torch.autograd.grad(loss, (student_buckets, student_tail))
    else:
        (bucket_grad,) = torch.autograd.grad(loss, student_buckets)
    bucket_grad = bucket_grad / temperature  # s = logits / temperature
    rest_factor = bucket_grad[:, -1].masked_fill(no_rest, 0.0)
    torch.mul(rest_probs, rest_factor[:, None], out=work)
    buffer.index_copy_(0, flat_ids, bucket_grad[:, :-1].reshape(-1))
    if sampled:  # a sampled id is a rest id: its direct term adds to the rest's softmax share (ids may repeat)
        buffer.index_add_(0, flat_tail, (tail_grad / temperature).reshape(-1))
    return loss.detach(), work


# --- chunked forward with the gradient computed on the fly --------------------------------------

class _ChunkedDivergence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher, rows, other_rows, row_weights, terms, temperature, width,
                need_grad, zeros, tail):
        vocab = student_logits.shape[-1]
        student_rows = student_logits.reshape(-1, vocab)[:, :width]
        # float32 at least (float64 stays float64, for gradcheck)
        compute_dtype = torch.promote_types(student_logits.dtype, torch.float32)
        device = student_logits.device
        sparse = isinstance(teacher, SparseTeacher)
        if sparse:
            k = teacher.k
            teacher_rows = (teacher.topk_logits.reshape(-1, k), teacher.topk_ids.reshape(-1, k),
                            teacher.rest_lse.reshape(-1))
            samples = teacher.tail_samples if tail is not None else 0
            if samples:
                teacher_rows += (teacher.tail_logits.reshape(-1, samples), teacher.tail_ids.reshape(-1, samples))
        else:
            teacher_rows = teacher.reshape(-1, teacher.shape[-1])[:, :width]
        grad_rows = None
        if need_grad:
            # every element is written once: the masked rows by their chunk, the others here
            grad = torch.empty(student_logits.shape, dtype=student_logits.dtype, device=device)
            grad_rows = grad.view(-1, vocab)
            grad_rows.index_fill_(0, other_rows, 0.0)
            if width < vocab:
                grad_rows[:, width:] = 0.0
        step = max(1, CHUNK_ELEMENTS // width)
        if sparse:
            buffer = torch.empty(min(step, rows.numel()) * width + 1, dtype=compute_dtype, device=device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, rows.numel(), step):
            chunk = rows[start:start + step]
            weights = row_weights[start:start + step].to(compute_dtype)
            if sparse:
                topk_logits, topk_ids, rest_lse, *tail_rows = (t[chunk] for t in teacher_rows)
                tail_args = (tail, tail_rows[0].to(compute_dtype), tail_rows[1].long()) if tail_rows else ()
                chunk_loss, chunk_grad = _sparse_chunk(
                    buffer, student_rows, chunk, topk_logits.to(compute_dtype), topk_ids.long(),
                    rest_lse.to(compute_dtype), weights, terms, temperature, need_grad, *tail_args)
            else:
                chunk_loss, chunk_grad = _dense_chunk(
                    student_rows[chunk].to(compute_dtype), teacher_rows[chunk].to(compute_dtype), weights,
                    terms, temperature, need_grad, zeros)
            if need_grad:
                grad_rows[chunk, :width] = chunk_grad.to(grad.dtype)
            total += chunk_loss.double()
        if need_grad:
            ctx.save_for_backward(grad)
        ctx.applied_scale = None
        return total.to(compute_dtype)

    @staticmethod
    def backward(ctx, grad_output):
        # The saved gradient is scaled in place (the Trainer divides the loss by its accumulation
        # steps): no second full-size tensor, and no reference kept past backward, so a leaf's .grad
        # can take the tensor itself. Through .data, which leaves the version counter alone, it stays
        # unpackable for a repeated backward (retain_graph, gradcheck), which undoes the scale.
        (grad,) = ctx.saved_tensors
        nones = (None,) * 10
        scale = float(grad_output)
        if ctx.applied_scale is not None:
            return grad * (scale / ctx.applied_scale), *nones
        if scale == 0.0 or not math.isfinite(scale):
            return grad * scale, *nones
        if scale != 1.0:
            grad.data.mul_(scale)
        ctx.applied_scale = scale
        return grad, *nones


def _check_inputs(student_logits, teacher_logits, mask, temperature):
    if not isinstance(student_logits, torch.Tensor) or student_logits.dim() != 3:
        raise KdgridError(f"student_logits must be a [batch, seq, vocab] tensor, got shape "
                          f"{tuple(getattr(student_logits, 'shape', ()))}")
    batch_seq = tuple(student_logits.shape[:2])
    if isinstance(teacher_logits, SparseTeacher):
        teacher_shape = teacher_logits.shape
    elif isinstance(teacher_logits, torch.Tensor) and teacher_logits.dim() == 3:
        teacher_shape = tuple(teacher_logits.shape[:2])
    else:
        raise KdgridError("teacher_logits must be a [batch, seq, vocab] tensor or a SparseTeacher")
    if teacher_shape != batch_seq:
        raise KdgridError(f"teacher [batch, seq] {teacher_shape} does not match the student's {batch_seq}")
    if tuple(mask.shape) != batch_seq:
        raise KdgridError(f"mask shape {tuple(mask.shape)} does not match the logits' [batch, seq] {batch_seq}")
    if not temperature > 0:
        raise KdgridError(f"temperature must be > 0, got {temperature}")
    if isinstance(teacher_logits, SparseTeacher) and not math.isclose(teacher_logits.temperature, temperature):
        raise KdgridError(f"the cached teacher outputs are at temperature {teacher_logits.temperature}, "
                          f"the loss asks for {temperature}")


def _token_weights(mask: torch.Tensor, per_sequence: bool):
    """Flat indices of the masked tokens, of the other tokens, and each masked token's weight in the
    batch average."""
    mask = mask.to(torch.bool)
    counts = mask.sum(1)
    if per_sequence:
        sequences = (counts > 0).sum()
        weights = mask / (counts.clamp(min=1)[:, None] * sequences.clamp(min=1))
    else:
        weights = mask / counts.sum().clamp(min=1)
    rows = mask.reshape(-1).nonzero().squeeze(1)
    other_rows = (~mask).reshape(-1).nonzero().squeeze(1)
    return rows, other_rows, weights.reshape(-1)[rows].float()


def _check_cache_rows(teacher: SparseTeacher, rows: torch.Tensor, width: int) -> None:
    """The cache batch covers the student's width and has a row at every masked position."""
    if width < teacher.width:
        raise KdgridError(f"the cached teacher rows cover {teacher.width} logits, the student has "
                          f"{width}: take the cache batch at the student's width (TeacherCache.batch(width=...))")
    if rows.numel() and bool((teacher.topk_ids.reshape(-1, teacher.k)[rows, 0] < 0).any()):
        raise KdgridError("the mask selects a position the teacher cache has no row for "
                          "(cached example shorter than the training sequence)")


def _divergence(terms, student_logits, teacher_logits, mask, temperature, per_sequence, tail=None):
    if isinstance(student_logits, StudentHead):  # hidden states and output layer instead of logits
        return student_logits.divergence(terms, teacher_logits, mask, temperature, per_sequence, tail)
    _check_inputs(student_logits, teacher_logits, mask, temperature)
    teacher_width = teacher_logits.width if isinstance(teacher_logits, SparseTeacher) else teacher_logits.shape[-1]
    width = min(student_logits.shape[-1], teacher_width)
    rows, other_rows, weights = _token_weights(mask.to(student_logits.device), per_sequence)
    if isinstance(teacher_logits, SparseTeacher):
        _check_cache_rows(teacher_logits, rows, width)
        zeros = True
    else:
        teacher_logits = teacher_logits.detach()
        # finite logits give finite log-probabilities: the divergences can skip their zero-probability guards
        zeros = not (bool(torch.isfinite(student_logits[..., :width]).all())
                     and bool(torch.isfinite(teacher_logits[..., :width]).all()))
    need_grad = torch.is_grad_enabled() and student_logits.requires_grad
    return _ChunkedDivergence.apply(student_logits, teacher_logits, rows, other_rows, weights * temperature**2,
                                    terms, float(temperature), width, need_grad, zeros, tail)


# --- public losses -------------------------------------------------------------------------------

def forward_kl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Forward KL(p_T || p_S), per-sequence token mean, batch mean, times temperature² (paper: SeqKD)."""
    return _divergence(_forward_kl_terms, student_logits, teacher_logits, mask, temperature, per_sequence=True,
                       tail=_forward_kl_tail)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Reverse KL(p_S || p_T), per-sequence token mean, batch mean, times temperature² (paper: RevKD)."""
    return _divergence(_reverse_kl_terms, student_logits, teacher_logits, mask, temperature, per_sequence=True)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor,
                    beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """GKD's generalized Jensen-Shannon divergence JSD(beta), mean over all masked tokens, times temperature².

    M = beta p_T + (1 - beta) p_S; per token beta KL(p_T || M) + (1 - beta) KL(p_S || M), as in the
    GKD paper and TRL >= 1.0. beta = 0 is forward KL(p_T || p_S), beta = 1 reverse KL(p_S || p_T), exactly.
    """
    if not 0.0 <= beta <= 1.0:
        raise KdgridError(f"generalized_jsd: beta must be in [0, 1], got {beta}")
    return _divergence(_generalized_jsd_terms(float(beta)), student_logits, teacher_logits, mask,
                       temperature, per_sequence=False)


def skew_kl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor,
            skew: float = 0.1, temperature: float = 1.0) -> torch.Tensor:
    """DistiLLM's skewed forward KL(p_T || skew p_T + (1 - skew) p_S), per-sequence averaging."""
    if not 0.0 <= skew <= 1.0:
        raise KdgridError(f"skew_kl: skew must be in [0, 1], got {skew}")
    return _divergence(_skew_kl_terms(float(skew)), student_logits, teacher_logits, mask, temperature,
                       per_sequence=True, tail=_skew_kl_tail(float(skew)))


def tvd(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor,
        temperature: float = 1.0) -> torch.Tensor:
    """Total variation distance 0.5 sum_v |p_T - p_S|, per-sequence averaging."""
    return _divergence(_tvd_terms, student_logits, teacher_logits, mask, temperature, per_sequence=True,
                       tail=_tvd_tail)


# method name -> its loss function, as the registry names it (methods that read logits)
LOSSES = {m.name: globals()[m.loss] for m in REGISTRY.values() if m.loss is not None}


def kd_loss(method: str, student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor,
            **kwargs) -> torch.Tensor:
    """The KD loss of `method` (a method of kdgrid.methods that reads logits); kwargs go to it
    (temperature and the method's loss_settings)."""
    if get_method(method).loss is None:
        raise KdgridError(f"KD method {method!r} trains on the teacher's responses: it has no loss of logits")
    return LOSSES[method](student_logits, teacher_logits, mask, **kwargs)


def mix_with_ce(ce_loss: torch.Tensor | None, kd: torch.Tensor, kd_weight: float = 1.0) -> torch.Tensor:
    """(1 - w) * CE + w * KD; with w = 1 (the study) the cross-entropy is not needed (may be None)."""
    if not 0.0 <= kd_weight <= 1.0:
        raise KdgridError(f"kd_weight must be in [0, 1], got {kd_weight}")
    if kd_weight == 1.0:
        return kd
    if ce_loss is None:
        raise KdgridError(f"kd_weight {kd_weight} < 1 needs the cross-entropy loss")
    return (1.0 - kd_weight) * ce_loss + kd_weight * kd


from .losses_from_hidden import StudentHead, linear_cross_entropy, linear_kd_loss  # noqa: F401

"""The KD losses and the cross-entropy straight from last hidden states: no [tokens, vocab] tensor.

`linear_kd_loss(hidden, weight, teacher, mask, method, ...)` is `kdgrid.losses.kd_loss(method, hidden @
weight.T (+ bias), teacher, mask, ...)` (same methods, settings, averaging, temperature² scaling, masking
and vocabulary-width slicing) without the student's logits: the masked rows of `hidden` go through the
output layer a chunk of rows at a time, each chunk's loss and gradient w.r.t. its logits come from
kdgrid.losses' own per-chunk code (`_dense_chunk`, `_sparse_chunk`), and that gradient is turned at once
into the gradients w.r.t. the hidden rows (g @ W) and, when the output layer trains, the weight (g.T @ h)
and bias. Only those ([masked tokens, H], and [V, H] for a trained weight) are kept for backward, which
scales them: no logits are recomputed. The rows go through the output layer in blocks of HEAD_BLOCK_ELEMENTS
logits (large matrix products), the divergence over sub-chunks of SUB_CHUNK_ELEMENTS; at most one
block's logits (then its gradient, written over them) and one sub-chunk's intermediates exist at a time.

`teacher` is the teacher's logits [batch, seq, V_T], a `SparseTeacher` from the cache, or the teacher's
own `(hidden, weight)` / `(hidden, weight, bias)`, whose logits are then formed per chunk too.

`linear_cross_entropy(hidden, weight, labels)` is the trainer's `causal_lm_loss` (next-token
cross-entropy, mean over the targets) computed the same way, so that SFT and KD steps pay alike.
"""

from __future__ import annotations

import math

import torch

from . import losses
from .errors import KdgridError
from .teacher_cache import SparseTeacher

# Logits of one block of rows through the output layer (88 MiB in float32, 151 rows at a 152k vocabulary); the
# block's gradient overwrites them, and an online teacher's block of logits exists beside them. Each product
# through the output layer reads (and packs) the whole [V, H] weight, so blocks of few rows run slower per row
# (benchmarks/loss_from_hidden.py at Qwen2.5's shapes, 2 CPU threads: 82 rows 1.3 x, 151 rows about 1.1 x the
# time of the full logits' products; peak 194 and 277 MiB, the goal's limit 298). The divergence runs over
# sub-chunks of SUB_CHUNK_ELEMENTS (4 MiB): its elementwise work does not need large chunks, and small ones
# keep the CPU heap from holding freed 16 MiB intermediates (peak 471 MiB with 16 MiB sub-chunks, 239 with 4).
HEAD_BLOCK_ELEMENTS = 11 << 21
SUB_CHUNK_ELEMENTS = 1 << 20


class StudentHead:
    """The student's last hidden states and output layer, standing in for its logits in kdgrid.losses:
    `losses._divergence` hands a StudentHead's loss to `divergence` below."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        _check_head("student", hidden, weight, bias)
        self.hidden, self.weight, self.bias = hidden, weight, bias

    def divergence(self, terms, teacher, mask, temperature, per_sequence, tail):
        hidden, weight, bias = self.hidden, self.weight, self.bias
        teacher_pair = isinstance(teacher, (tuple, list))
        if teacher_pair:
            if len(teacher) not in (2, 3):
                raise KdgridError("a teacher given as a tuple must be (hidden, weight) or (hidden, weight, bias)")
            teacher_head = tuple(teacher) + (None,) * (3 - len(teacher))
            _check_head("teacher", *teacher_head)
            teacher_width = teacher_head[1].shape[0]
        elif isinstance(teacher, SparseTeacher):
            teacher_width = teacher.width
        elif isinstance(teacher, torch.Tensor):
            teacher_width = teacher.shape[-1]
        else:
            raise KdgridError("teacher must be [batch, seq, vocab] logits, a SparseTeacher or a (hidden, weight) pair")
        # the shapes, mask and temperature checked as kdgrid.losses checks them (hidden's [batch, seq] for the logits')
        losses._check_inputs(hidden, teacher_head[0] if teacher_pair else teacher, mask, temperature)
        width = min(weight.shape[0], teacher_width)
        rows, _, row_weights = losses._token_weights(mask.to(hidden.device), per_sequence)
        if isinstance(teacher, SparseTeacher):
            losses._check_cache_rows(teacher, rows, width)
            chunk_loss = _SparseTeacherRows(teacher, rows, terms, float(temperature), tail)
        elif teacher_pair:
            chunk_loss = _DenseTeacherRows(_TeacherHead(*teacher_head, rows, width), terms, float(temperature))
        else:
            chunk_loss = _DenseTeacherRows(_GivenTeacherRows(teacher.detach(), rows, width), terms, float(temperature))
        hidden_rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
        return _head_loss(hidden_rows, weight, bias, width, chunk_loss, row_weights * temperature**2)


def _check_head(side, hidden, weight, bias):
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise KdgridError(f"the {side}'s hidden states must be a [batch, seq, hidden] tensor, got shape "
                          f"{tuple(getattr(hidden, 'shape', ()))}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise KdgridError(f"the {side}'s output-layer weight must be [vocab, {hidden.shape[-1]}] (its hidden size), "
                          f"got shape {tuple(getattr(weight, 'shape', ()))}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise KdgridError(f"the {side}'s output-layer bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")


def _logits(hidden_rows, weight, bias, width, dtype):
    """One chunk's logits [n, width] in the compute dtype (the matmul in the weights' own dtype)."""
    weight = weight[:width]
    if bias is None:
        out = hidden_rows.to(weight.dtype) @ weight.T
    else:
        out = torch.addmm(bias[:width], hidden_rows.to(weight.dtype), weight.T)
    return out.to(dtype)


class _GivenTeacherRows:
    """The teacher's given logits at the masked rows, a block of rows at a time (no copy of them all)."""

    def __init__(self, logits, rows, width):
        self.rows_of_logits, self.rows, self.width = logits.reshape(-1, logits.shape[-1]), rows, width

    def __getitem__(self, block: slice):
        return self.rows_of_logits[self.rows[block], :self.width]


class _TeacherHead:
    """The teacher's logits at the masked rows, formed a block of rows at a time from its hidden states."""

    def __init__(self, hidden, weight, bias, rows, width):
        self.hidden_rows = hidden.detach().reshape(-1, hidden.shape[-1]).index_select(0, rows)
        self.weight, self.bias, self.width = weight.detach(), None if bias is None else bias.detach(), width

    def __getitem__(self, block: slice):
        dtype = torch.promote_types(self.hidden_rows.dtype, torch.float32)
        return _logits(self.hidden_rows[block], self.weight, self.bias, self.width, dtype)


# --- one block of rows: its loss, its logits overwritten by their gradient (need_grad), from kdgrid.losses'
# chunk code run over sub-chunks of SUB_CHUNK_ELEMENTS --------------------------------------------------------

def _sub_chunks(n: int, width: int):
    step = max(1, SUB_CHUNK_ELEMENTS // width)
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


class _DenseTeacherRows:
    def __init__(self, teacher_rows, terms, temperature):
        self.teacher_rows, self.terms, self.temperature = teacher_rows, terms, temperature

    def __call__(self, block: slice, logits, weights, need_grad):
        teacher_block = self.teacher_rows[block]
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for sub in _sub_chunks(logits.shape[0], logits.shape[1]):
            student, teacher = logits[sub], teacher_block[sub].to(logits.dtype)
            # finite logits give finite log-probabilities: the divergences can skip their zero-probability guards
            zeros = not (bool(torch.isfinite(student).all()) and bool(torch.isfinite(teacher).all()))
            loss, grad = losses._dense_chunk(student, teacher, weights[sub], self.terms, self.temperature,
                                             need_grad, zeros)
            total += loss.double()
            if need_grad:
                student.copy_(grad)
        return total


class _SparseTeacherRows:
    def __init__(self, teacher: SparseTeacher, rows, terms, temperature, tail):
        k = teacher.k
        self.rows = [teacher.topk_logits.reshape(-1, k)[rows], teacher.topk_ids.reshape(-1, k)[rows],
                     teacher.rest_lse.reshape(-1)[rows]]
        samples = teacher.tail_samples if tail is not None else 0
        if samples:
            self.rows += [teacher.tail_logits.reshape(-1, samples)[rows], teacher.tail_ids.reshape(-1, samples)[rows]]
        self.terms, self.temperature, self.tail = terms, temperature, tail
        self.buffer = None

    def __call__(self, block: slice, logits, weights, need_grad):
        width = logits.shape[1]
        subs = _sub_chunks(logits.shape[0], width)
        size = (subs[0].stop - subs[0].start) * width + 1
        if self.buffer is None or self.buffer.numel() < size or self.buffer.dtype != logits.dtype:
            self.buffer = torch.empty(size, dtype=logits.dtype, device=logits.device)
        block_rows = [t[block] for t in self.rows]
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for sub in subs:
            n = sub.stop - sub.start
            topk_logits, topk_ids, rest_lse, *tail_rows = (t[sub] for t in block_rows)
            tail_args = (self.tail, tail_rows[0].to(logits.dtype), tail_rows[1].long()) if tail_rows else ()
            loss, grad = losses._sparse_chunk(
                self.buffer[: n * width + 1], logits[sub], torch.arange(n, device=logits.device),
                topk_logits.to(logits.dtype), topk_ids.long(), rest_lse.to(logits.dtype), weights[sub], self.terms,
                self.temperature, need_grad, *tail_args)
            total += loss.double()
            if need_grad:
                logits[sub].copy_(grad)
        return total


class _TargetRows:
    """Cross-entropy of each row's logits against its target id."""

    def __init__(self, targets):
        self.targets = targets

    def __call__(self, block: slice, logits, weights, need_grad):
        targets_block = self.targets[block]
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for sub in _sub_chunks(logits.shape[0], logits.shape[1]):
            rows, targets, w = logits[sub], targets_block[sub], weights[sub]
            log_z = torch.logsumexp(rows, 1)
            total += ((log_z - rows.gather(1, targets[:, None]).squeeze(1)) * w).sum().double()
            if need_grad:  # softmax - one-hot, in place
                rows.sub_(log_z[:, None]).exp_().mul_(w[:, None])
                rows[torch.arange(len(targets), device=rows.device), targets] -= w
        return total


# --- the head in blocks of rows: forward computes the loss and every gradient, backward scales them ----------

def _head_loss(hidden_rows, weight, bias, width, chunk_loss, row_weights):
    wants = (hidden_rows.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    need = torch.is_grad_enabled() and any(wants)
    return _HeadChunks.apply(hidden_rows, weight, bias, width, chunk_loss, row_weights,
                             tuple(w and need for w in wants))


class _HeadChunks(torch.autograd.Function):
    """Blocks of HEAD_BLOCK_ELEMENTS logits: few, large matrix products through the output layer (a
    product of a few rows by a [V, H] weight runs at half speed on a CPU), the divergence over sub-chunks."""

    @staticmethod
    def forward(ctx, hidden_rows, weight, bias, width, chunk_loss, row_weights, needs):
        need_hidden, need_weight, need_bias = needs
        need_grad = any(needs)
        compute_dtype = torch.promote_types(hidden_rows.dtype, torch.float32)
        device = hidden_rows.device
        n = hidden_rows.shape[0]
        grad_hidden = torch.zeros(hidden_rows.shape, dtype=compute_dtype, device=device) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=compute_dtype, device=device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=compute_dtype, device=device) if need_bias else None
        total = torch.zeros((), dtype=torch.float64, device=device)
        step = max(1, HEAD_BLOCK_ELEMENTS // width)
        for start in range(0, n, step):
            block = slice(start, min(start + step, n))
            h = hidden_rows[block].detach()
            logits = _logits(h, weight.detach(), None if bias is None else bias.detach(), width, compute_dtype)
            total += chunk_loss(block, logits, row_weights[block].to(compute_dtype), need_grad)
            if need_grad:
                grad = logits  # overwritten by the loss's gradient w.r.t. the logits
                if need_hidden:
                    grad_hidden[block] = grad.to(weight.dtype) @ weight.detach()[:width]
                if need_weight:
                    grad_weight[:width].addmm_(grad.T, h.to(compute_dtype))
                if need_bias:
                    grad_bias[:width] += grad.sum(0)
                del grad
            del logits  # before the next block's logits exist
        saved = (grad_hidden, grad_weight, grad_bias)
        ctx.saved = tuple(None if g is None else (g if g.dtype == t.dtype else g.to(t.dtype))
                          for g, t in zip(saved, (hidden_rows, weight, bias)))
        ctx.applied_scale = None
        return total.to(compute_dtype)

    @staticmethod
    def backward(ctx, grad_output):
        # As kdgrid.losses' _ChunkedDivergence: the saved gradients are scaled in place (no second
        # [V, H] tensor for a trained weight); a repeated backward undoes the scale.
        scale = float(grad_output)
        grads = ctx.saved
        if ctx.applied_scale is not None:
            out = tuple(None if g is None else g * (scale / ctx.applied_scale) for g in grads)
        elif scale == 0.0 or not math.isfinite(scale):
            out = tuple(None if g is None else g * scale for g in grads)
        else:
            if scale != 1.0:
                for g in grads:
                    if g is not None:
                        g.mul_(scale)
            ctx.applied_scale = scale
            out = grads
        return (*out, None, None, None, None)


# --- public ---------------------------------------------------------------------------------------------

def linear_kd_loss(hidden: torch.Tensor, weight: torch.Tensor, teacher, mask: torch.Tensor, method: str,
                   temperature: float = 1.0, *, bias: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """`kdgrid.losses.kd_loss(method, hidden @ weight.T + bias, teacher, mask, temperature=..., **kwargs)`
    without forming the student's logits (or the teacher's, given as `(hidden, weight[, bias])`).

    hidden [batch, seq, H] the student's last hidden states, weight [V, H] (and bias [V]) its output layer;
    teacher: logits [batch, seq, V_T], a SparseTeacher, or (hidden [batch, seq, H_T], weight [V_T, H_T][, bias]).
    kwargs: the method's settings (beta, skew). Differentiable w.r.t. hidden, weight and bias.
    """
    return losses.kd_loss(method, StudentHead(hidden, weight, bias), teacher, mask, temperature=temperature,
                          **kwargs)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the targets (labels != -100) of hidden @ weight.T + bias: position
    t predicts labels[:, t + 1], as `kdgrid.training.trainer.causal_lm_loss`; 0 without targets."""
    _check_head("student", hidden, weight, bias)
    if tuple(labels.shape) != tuple(hidden.shape[:2]):
        raise KdgridError(f"labels shape {tuple(labels.shape)} does not match the hidden states' [batch, seq] "
                          f"{tuple(hidden.shape[:2])}")
    targets = labels[:, 1:].to(hidden.device)
    counted = targets.ne(-100)
    rows = torch.nonzero(counted.reshape(-1)).squeeze(1)
    target_ids = targets.reshape(-1)[rows].long()
    vocab = weight.shape[0]
    if rows.numel() and bool(((target_ids < 0) | (target_ids >= vocab)).any()):
        raise KdgridError(f"a label is outside the output layer's {vocab} ids")
    hidden_rows = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, rows)
    row_weights = torch.full((rows.numel(),), 1.0 / max(rows.numel(), 1), device=hidden.device)
    return _head_loss(hidden_rows, weight, bias, vocab, _TargetRows(target_ids), row_weights)

"""What the loss and teacher-cache tests share: the named loss settings they run, kdgrid's loss under a
setting, and the divergences written out straightforwardly in float64 (independently of kdgrid.losses)
that kdgrid's values and gradients are compared with."""

import math
from types import SimpleNamespace

import torch

from kdgrid import losses
from kdgrid.teacher_cache import SparseTeacher

SETTINGS = {  # name -> (method, its keyword arguments)
    "fkl": ("fkl", {}), "rkl": ("rkl", {}), "gkd": ("gkd", {"beta": 0.5}), "gkd_0.3": ("gkd", {"beta": 0.3}),
    "gkd_0": ("gkd", {"beta": 0.0}), "gkd_1": ("gkd", {"beta": 1.0}), "skew_kl": ("skew_kl", {"skew": 0.1}),
    "skew_kl_0.5": ("skew_kl", {"skew": 0.5}), "tvd": ("tvd", {}),
}


def loss_of(name, *args, **kw):
    """kdgrid's loss under the named setting."""
    method, params = SETTINGS[name]
    return losses.kd_loss(method, *args, **kw, **params)


def kl(a, b):
    """sum a log(a / b), 0 where a = 0 (and finite gradients there)."""
    safe_a = torch.where(a > 0, a, 1.0)
    safe_b = torch.where(a > 0, b, 1.0)
    return torch.where(a > 0, a * (safe_a.log() - safe_b.log()), 0.0).sum(-1)


def divergence(name, p, q):
    """The named setting's divergence at each position between the teacher's distribution p and the
    student's q (over the last dimension)."""
    method, params = SETTINGS[name]
    if method == "fkl":
        return kl(p, q)
    if method == "rkl":
        return kl(q, p)
    if method == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if method == "skew_kl":
        return kl(p, params["skew"] * p + (1 - params["skew"]) * q)
    beta = params["beta"]  # the GKD paper's JSD(beta); forward / reverse KL at its ends
    m = beta * p + (1 - beta) * q
    return {0.0: kl(p, q), 1.0: kl(q, p)}.get(beta, beta * kl(p, m) + (1 - beta) * kl(q, m))


def per_sequence_mean(per_token, mask):
    """The mean over sequences of each sequence's mean over its masked positions (sequences with none left out)."""
    mask = mask.double()
    counts = mask.sum(1)
    keep = counts > 0
    if not keep.any():
        return per_token.sum() * 0.0
    seq_means = (per_token * mask).sum(1)[keep] / counts[keep]
    return seq_means.mean()


def token_mean(per_token, mask):
    """The mean over all masked positions of the batch."""
    mask = mask.double()
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def reduced(name, per_token, mask, temperature):
    """The loss from per-position divergences: gkd averages over tokens, the others per sequence; x tau²."""
    mean = token_mean if SETTINGS[name][0] == "gkd" else per_sequence_mean
    return mean(per_token, mask) * temperature**2


def sparse_from_dense(teacher_logits, k, temperature, width=None):
    """An independent SparseTeacher built from dense logits (no cache involved)."""
    width = width or teacher_logits.shape[-1]
    rows = teacher_logits.double()
    values, ids = rows.topk(k, -1)
    scaled = rows[..., :width] / temperature
    in_top = torch.zeros_like(rows, dtype=torch.bool).scatter(-1, ids, True)[..., :width]
    rest = scaled.masked_fill(in_top, -math.inf).logsumexp(-1)
    return SparseTeacher(values.float(), ids, scaled.logsumexp(-1).float(), rest.float(), temperature, width)


class FixedTeacher(torch.nn.Module):
    """A 'teacher' whose logits are given, [examples, positions, vocab], for compute_teacher_outputs."""

    def __init__(self, logits):
        super().__init__()
        self.fixed = logits

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.fixed[:input_ids.shape[0], :input_ids.shape[1]])

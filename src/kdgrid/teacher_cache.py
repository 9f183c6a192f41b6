"""Teacher outputs computed once: per token, the teacher's top-k logits and enough to keep the
distribution exact on them.

`SparseTeacher` is what the losses in `kdgrid.losses` accept in place of dense teacher logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseTeacher:
    """The teacher's distribution at one temperature, kept exactly on its top-k tokens per position.

    topk_logits [B, T, k] float32: raw logits (not divided by the temperature) of the top-k tokens;
    topk_ids [B, T, k] long: their token ids (-1 on padding rows the cache has no entry for);
    lse [B, T] float32: log-sum-exp of the whole row of logits / temperature;
    rest_lse [B, T] float32: log-sum-exp of logits / temperature over the tokens NOT in the top-k
      (-inf when the top-k covers the whole row);
    temperature: the temperature `lse` and `rest_lse` were computed at;
    width: how many logits the teacher's rows had (its vocabulary width).
    The teacher's probability of a top-k token is exp(topk_logits / temperature - lse), the total of
    all the others exp(rest_lse - lse).
    """

    topk_logits: torch.Tensor
    topk_ids: torch.Tensor
    lse: torch.Tensor
    rest_lse: torch.Tensor
    temperature: float
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.topk_ids.shape[:2])

    @property
    def k(self) -> int:
        return self.topk_ids.shape[-1]

    def to(self, device) -> SparseTeacher:
        return SparseTeacher(
            self.topk_logits.to(device), self.topk_ids.to(device), self.lse.to(device),
            self.rest_lse.to(device), self.temperature, self.width,
        )

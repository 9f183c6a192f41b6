"""KDTrainer: a thin subclass of transformers.Trainer that only wires the losses together.

One micro-batch: (for on-policy GKD, maybe replace the responses by the student's own samples) ->
student forward -> cross-entropy (SFT, seqkd) or the KD loss of `kdgrid.losses` against the
teacher's logits (online, optionally with Gaussian noise) or the teacher-output cache.
Everything else (optimizer, schedule, accumulation, DeepSpeed, checkpoints) is the Trainer's.

With `cfg.fused_loss` (the default) no model forms its full logits: the forward runs with the output
layer passing its input through, and the losses take the last hidden states and the output layer's
weight (`kdgrid.losses.linear_kd_loss`, `linear_cross_entropy`), for SFT and KD alike; an online teacher
gives its hidden states and head the same way (with teacher noise, its logits). The logits path remains
where the output layer is not a plain Linear (LoRA on lm_head) or is sharded (ZeRO-3), and with
`fused_loss` off.
"""

from __future__ import annotations

import hashlib
import math
import random
import resource
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import Trainer

from .config import TrainConfig


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens (labels != -100) of the micro-batch;
    0 for a micro-batch without targets (response-only scope, prompts longer than the cutoff)."""
    targets = labels[:, 1:]
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                            reduction="sum")
    return total / targets.ne(-100).sum().clamp(min=1)


def next_token_loss(student, labels: torch.Tensor) -> torch.Tensor:
    """causal_lm_loss of the student's logits, or of its hidden states and output layer (a StudentHead)."""
    from ..losses import StudentHead, linear_cross_entropy

    if isinstance(student, StudentHead):
        return linear_cross_entropy(student.hidden, student.weight, labels, student.bias)
    return causal_lm_loss(student, labels)


def fusable_output_layer(model):
    """The output layer of a causal LM (PEFT-wrapped or not) if the losses can take it apart from the
    forward (a plain Linear), else None."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    return head if type(head) is torch.nn.Linear else None


@contextmanager
def output_layer_passes_through(head: torch.nn.Module):
    """Within it, `head` returns its input: the model's `.logits` are its last hidden states."""
    head.forward = _identity
    try:
        yield head
    finally:
        del head.forward


def _identity(x):
    return x


class CacheCheck:
    """The cache measured against the online teacher on the first optimizer step of a cell (the student
    at its initialisation), then the decision: read the cache for the rest of the run, or keep the
    teacher online. During the check the step trains on the online teacher's signal."""

    def __init__(self, method: str, temperature: float, tolerance: float, micro_batches: int):
        self.method, self.temperature, self.tolerance = method, temperature, tolerance
        self.micro_batches = micro_batches
        self.sums = torch.zeros(5, dtype=torch.float64)  # online, cached, rest-mass sum, tokens, micro-batches

    def add(self, online: torch.Tensor, cached: torch.Tensor, rest_mass: torch.Tensor) -> bool:
        """Add one micro-batch; True once the check has seen its micro-batches (on this process)."""
        self.sums += torch.tensor([float(online), float(cached), float(rest_mass.sum()), rest_mass.numel(), 1.0],
                                  dtype=torch.float64)
        return int(self.sums[4]) >= self.micro_batches

    def decide(self, all_reduce=None) -> dict:
        sums = self.sums.clone()
        if all_reduce is not None:
            sums = all_reduce(sums)
        online, cached, rest, tokens, micro = (float(x) for x in sums)
        error = (cached - online) / abs(online) if online != 0 else (0.0 if cached == 0 else math.inf)
        use_cache = abs(error) <= self.tolerance
        verdict = "within" if use_cache else "above"
        return {
            "event": "teacher_signal", "teacher_signal": "cache" if use_cache else "online",
            "reason": (f"{self.method} at temperature {self.temperature:g}: the cache's first-step loss "
                       f"{cached:.6g} vs the online teacher's {online:.6g} (relative error {error:+.3%}) is "
                       f"{verdict} the tolerance {self.tolerance:.3%}"),
            "method": self.method, "temperature": self.temperature, "online_loss": online / micro,
            "cached_loss": cached / micro, "loss_error": error, "tolerance": self.tolerance,
            "teacher_rest_mass_mean": rest / max(tokens, 1), "check_micro_batches": int(micro),
        }


def _seed_of(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


class KDTrainer(Trainer):
    def __init__(self, *args, cfg: TrainConfig, teacher=None, teacher_cache=None, student_width: int,
                 pad_token_id: int, eos_token_id: int, teacher_signal: dict | None = None, on_teacher_signal=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        # Our losses are means over one micro-batch; the Trainer divides them by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.cfg = cfg
        self.teacher_cache = teacher_cache
        self.student_width = student_width
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.teacher = self._prepare_teacher(teacher) if teacher is not None else None
        # With both a teacher and a cache, the cache is measured on the first optimizer step (CacheCheck)
        # unless `teacher_signal`, a decision taken before a resume, is given.
        self.teacher_signal = teacher_signal
        self.on_teacher_signal = on_teacher_signal
        self.cache_check = None
        if teacher is not None and teacher_cache is not None:
            if teacher_signal is None:
                self.cache_check = CacheCheck(cfg.method, cfg.temperature, cfg.cache_tolerance,
                                              self.args.gradient_accumulation_steps)
            else:
                self._apply_signal(teacher_signal)
        self._micro = (-1, 0)  # (global step, micro-batch index within it): seeds sampling decisions
        self._tokens_since_log = torch.zeros((), dtype=torch.long, device=self.args.device)
        self._last_log_time = time.perf_counter()

    # --- teacher -------------------------------------------------------------------------------

    def _prepare_teacher(self, teacher):
        """Replicated on every process at ZeRO stages 0-2; sharded with ZeRO-3 inference at stage 3."""
        if self.is_deepspeed_enabled and self.cfg.zero_stage == 3:
            from .distributed import zero3_inference_engine

            return zero3_inference_engine(teacher, self.accelerator)
        return teacher.to(self.args.device)

    def _apply_signal(self, signal: dict) -> None:
        """Keep one teacher signal for the rest of the run and free the other."""
        if signal["teacher_signal"] == "cache":
            self.teacher = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        else:
            self.teacher_cache = None

    def _all_reduce(self, sums: torch.Tensor) -> torch.Tensor:
        if self.args.world_size <= 1:
            return sums
        on_device = sums.to(self.args.device)
        torch.distributed.all_reduce(on_device)
        return on_device.cpu()

    def _check_cache(self, student, kd_mask, example_index, online_kd, kwargs) -> None:
        """One micro-batch of the cache check: the cached loss beside the online one; decide when done.
        `student`: its logits or a StudentHead."""
        from ..losses import StudentHead, kd_loss

        with torch.no_grad():
            sparse = self.teacher_cache.batch(example_index.tolist(), kd_mask.shape[1], self.cfg.temperature,
                                              kd_mask.device, width=self.student_width)
            if isinstance(student, StudentHead):
                student = StudentHead(student.hidden.detach(), student.weight.detach(),
                                      None if student.bias is None else student.bias.detach())
            else:
                student = student.detach()
            cached = kd_loss(self.cfg.method, student, sparse, kd_mask, **kwargs)
            rest_mass = (sparse.rest_lse - sparse.lse).exp()[kd_mask.bool()]
        if self.cache_check.add(online_kd.detach(), cached, rest_mass.float().cpu()):
            self.teacher_signal = self.cache_check.decide(self._all_reduce)
            self.cache_check = None
            self._apply_signal(self.teacher_signal)
            if self.on_teacher_signal is not None:
                self.on_teacher_signal(self.teacher_signal)

    @torch.no_grad()
    def teacher_outputs(self, input_ids, attention_mask, example_index, fused: bool = False):
        """The cache's SparseTeacher, or the online teacher's logits; with `fused` (and no noise) the
        teacher's (last hidden states, output-layer weight, bias) instead of its logits."""
        if self.teacher_cache is not None and self.cache_check is None:
            return self.teacher_cache.batch(example_index.tolist(), input_ids.shape[1], self.cfg.temperature,
                                            input_ids.device, width=self.student_width)
        head = fusable_output_layer(self.teacher) if fused and self.cfg.noise_sigma == 0 else None
        if head is not None:
            with output_layer_passes_through(head):
                hidden = self.teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return hidden, head.weight, head.bias
        logits = self.teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        if self.cfg.noise_sigma > 0:
            step, micro = self._micro
            generator = torch.Generator(device=logits.device)
            generator.manual_seed(_seed_of("noise", self.cfg.seed, step, micro, self.args.process_index))
            noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
            logits = logits.float() + self.cfg.noise_sigma * noise
        return logits

    # --- on-policy GKD -------------------------------------------------------------------------

    def _draw_on_policy(self) -> bool:
        """Same decision on every process (ZeRO-3 generation is collective), reproducible on resume."""
        step, micro = self._micro
        return random.Random(_seed_of("on-policy", self.cfg.seed, step, micro)).random() < self.cfg.lmbda

    def on_policy_batch(self, model, input_ids, prompt_len):
        """The batch with each response replaced by the student's own sample from its prompt.
        Returns (input_ids, attention_mask, labels, kd_mask), right-padded like the collator's."""
        device, pad, eos = input_ids.device, self.pad_token_id, self.eos_token_id
        width = input_ids.shape[1]
        longest_prompt = int(prompt_len.max())
        max_new = min(self.cfg.gkd_max_new_tokens, self.cfg.cutoff - longest_prompt)
        if max_new <= 0:
            return None
        positions = torch.arange(longest_prompt, device=device)[None]
        shift = (longest_prompt - prompt_len)[:, None]  # left padding of each prompt
        source = (positions - shift).clamp(min=0)
        prompts = torch.where(positions >= shift, input_ids.gather(1, source), pad)
        prompt_mask = (positions >= shift).long()

        student = self.accelerator.unwrap_model(model)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            out = student.generate(
                input_ids=prompts, attention_mask=prompt_mask, do_sample=True, temperature=1.0, top_k=0,
                top_p=1.0, max_new_tokens=max_new, pad_token_id=pad, eos_token_id=eos, use_cache=True,
                synced_gpus=self.is_deepspeed_enabled and self.cfg.zero_stage == 3 and self.args.world_size > 1,
            )
        student.train(was_training)
        generated = out[:, longest_prompt:]
        if generated.shape[1] == 0:
            return None
        is_eos = generated == eos
        response_len = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, generated.shape[1])
        lengths = prompt_len + response_len
        total = int(lengths.max())

        positions = torch.arange(total, device=device)[None]
        in_prompt = positions < prompt_len[:, None]
        in_sequence = positions < lengths[:, None]
        prompt_part = F.pad(input_ids, (0, max(0, total - width)), value=pad)[:, :total]
        response_part = generated.gather(1, (positions - prompt_len[:, None]).clamp(0, generated.shape[1] - 1))
        new_ids = torch.where(in_prompt, prompt_part, torch.where(in_sequence, response_part, pad))
        attention_mask = in_sequence.long()
        if self.cfg.token_scope == "all":
            loss_mask = in_sequence & (positions > 0)
        else:
            loss_mask = in_sequence & ~in_prompt
        labels = new_ids.masked_fill(~loss_mask, -100)
        kd_mask = torch.zeros_like(attention_mask)
        kd_mask[:, :-1] = loss_mask[:, 1:].long()
        return new_ids, attention_mask, labels, kd_mask

    # --- the loss ------------------------------------------------------------------------------

    def _prepare_inputs(self, inputs):
        """Move the batch to the device, except the example indices: the teacher cache reads them on the host."""
        example_index = inputs.pop("example_index", None)
        inputs = super()._prepare_inputs(inputs)
        if example_index is not None:
            inputs["example_index"] = example_index
        return inputs

    def _student_output_layer(self, model):
        """The student's output layer for the losses from hidden states, or None: the logits path."""
        if not self.cfg.fused_loss or (self.is_deepspeed_enabled and self.cfg.zero_stage == 3):
            return None
        return fusable_output_layer(self.accelerator.unwrap_model(model))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from ..losses import StudentHead, kd_loss, mix_with_ce

        step = self.state.global_step
        self._micro = (step, self._micro[1] + 1) if self._micro[0] == step else (step, 0)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        labels, kd_mask = inputs["labels"], inputs["kd_mask"]
        if self.cfg.is_on_policy and self._draw_on_policy():
            replaced = self.on_policy_batch(model, input_ids, inputs["prompt_len"])
            if replaced is not None:
                input_ids, attention_mask, labels, kd_mask = replaced
        self._tokens_since_log += attention_mask.sum()

        head = self._student_output_layer(model)
        if head is None:
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            student = outputs.logits
        else:  # outputs.logits are the last hidden states
            with output_layer_passes_through(head):
                outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            student = StudentHead(outputs.logits, head.weight, head.bias)
        if not self.cfg.uses_teacher:
            loss = next_token_loss(student, labels)
        else:
            teacher = self.teacher_outputs(input_ids, attention_mask, inputs["example_index"], fused=head is not None)
            kwargs = {"temperature": self.cfg.temperature}
            if self.cfg.method == "gkd":
                kwargs["beta"] = self.cfg.beta
            elif self.cfg.method == "skew_kl":
                kwargs["skew"] = self.cfg.skew
            kd = kd_loss(self.cfg.method, student, teacher, kd_mask, **kwargs)
            if self.cache_check is not None:
                self._check_cache(student, kd_mask, inputs["example_index"], kd, kwargs)
            ce = next_token_loss(student, labels) if self.cfg.kd_weight < 1 else None
            loss = mix_with_ce(ce, kd, self.cfg.kd_weight)
        return (loss, outputs) if return_outputs else loss

    # --- logging -------------------------------------------------------------------------------

    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Add the tokens of the step, tokens/s (all processes) and peak memory to each step's log."""
        if "loss" in logs:
            tokens = self._tokens_since_log.clone()
            if self.args.world_size > 1:
                torch.distributed.all_reduce(tokens)
            now = time.perf_counter()
            logs["tokens"] = int(tokens)
            logs["tokens_per_s"] = round(int(tokens) / max(now - self._last_log_time, 1e-9), 1)
            logs["memory_mb"] = round(peak_memory_mb(), 1)
            self._tokens_since_log.zero_()
            self._last_log_time = now
        super().log(logs, start_time)


def peak_memory_mb() -> float:
    """Peak accelerator memory of this process on a GPU, else its peak resident memory (CPU)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes

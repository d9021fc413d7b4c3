"""LoRA fine-tuning of the embedded model on one plant's examples, on this CPU.

transformers reads the shipped GGUF itself (dequantised to float32), peft adds a LoRA on the
attention and MLP projections, and a plain torch loop trains it on the answer tokens only (the
prompt is :func:`llm_coordinator.context.build_tuned_context`, exactly what the planner sends).
Seeded and single-threaded in its data order, so the same data and configuration give the same
adapter. The adapter is exported for llama.cpp (:mod:`llm_coordinator.tuning.gguf_adapter`) and
served over the unchanged base file.

Interrupted training resumes: a checkpoint (LoRA weights, optimiser, step, and a hash of the
data and configuration) is written atomically every few steps into the work folder; a run with
the same data and configuration takes it up, anything else starts again. Nothing a
configuration points to is written before training has finished (see
:mod:`llm_coordinator.tuning.models`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_coordinator.context import build_tuned_context
from llm_coordinator.tuning.config import TuneConfig
from llm_coordinator.tuning.data import Example

#: The projections a LoRA adapts (all of attention and MLP).

Progress = Callable[[int, int, float], None]


def chat(plant_name: str, order: str, examples: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """The messages of one reading, as the planner sends them."""
    ctx = build_tuned_context(plant_name, order, examples=examples)
    return [{"role": "system", "content": ctx.system}, {"role": "user", "content": ctx.user}]


def load_base(base_gguf: Path, threads: int) -> tuple[Any, Any]:
    """(tokenizer, float32 model) from the shipped GGUF, with its quantiser marker dropped (it
    would forbid training and saving)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name, dtype=torch.float32)
    setattr(model, "hf_quantizer", None)  # noqa: B010 - torch's Module typing forbids a plain assignment
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    setattr(model, "is_quantized", False)  # noqa: B010
    return tok, model


def encode(
    tok: Any, plant_name: str, example: Example, shots: Sequence[tuple[str, str]], max_tokens: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one example: the loss falls on the answer and its end marker."""
    end = tok.eos_token or "<|im_end|>"
    a_ids: list[int] = list(tok(example.answer + end, add_special_tokens=False)["input_ids"])
    shown = list(shots)
    while True:
        # Too long: fewer retrieved examples, never a prompt cut at its start.
        messages = chat(plant_name, example.order, shown)
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids: list[int] = list(tok(prompt, add_special_tokens=False)["input_ids"])
        if len(p_ids) + len(a_ids) <= max_tokens or not shown:
            break
        shown.pop()
    ids = (p_ids + a_ids)[:max_tokens]
    labels = ([-100] * len(p_ids) + a_ids)[:max_tokens]
    return ids, labels


def data_hash(examples: Sequence[Example], config: TuneConfig) -> str:
    h = hashlib.sha256(json.dumps(config.key(), sort_keys=True, default=str).encode())
    for e in examples:
        h.update(json.dumps(e.to_json(), sort_keys=True).encode())
    return h.hexdigest()[:16]


@dataclass
class TrainResult:
    """What a run did: steps done of planned, last loss, seconds, whether it resumed or hit the
    time limit."""

    steps: int
    planned_steps: int
    loss: float
    seconds: float
    resumed_from: int = 0
    stopped_at_limit: bool = False
    losses: list[float] = field(default_factory=list)


def _save_atomic(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    model: Any,
    tok: Any,
    plant_name: str,
    examples: Sequence[Example],
    shots: Sequence[Sequence[tuple[str, str]]],
    config: TuneConfig,
    work: Path,
    progress: Progress | None = None,
) -> tuple[Any, TrainResult]:
    """LoRA-train ``model`` on ``examples`` (``shots[i]``: retrieved examples shown with example
    i); returns (the peft model, what the run did). Resumes from ``work``'s checkpoint when it
    belongs to the same data and configuration."""
    import torch
    from peft import LoraConfig, get_peft_model

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=int(config.alpha),
        lora_dropout=config.dropout,
        target_modules=list(config.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    encoded = [encode(tok, plant_name, e, s, config.max_tokens) for e, s in zip(examples, shots, strict=True)]
    rng = random.Random(config.seed)
    n_batches = max(1, -(-len(encoded) // config.batch_size))
    planned = max(1, round(n_batches * config.epochs))
    order: list[int] = []
    while len(order) < planned * config.batch_size:
        # Shuffled, then grouped by length within windows of a few batches (less padding, so
        # faster on a CPU), the batches themselves in random order.
        epoch = list(range(len(encoded)))
        rng.shuffle(epoch)
        window = config.batch_size * 8
        batches: list[list[int]] = []
        for w in range(0, len(epoch), window):
            part = sorted(epoch[w : w + window], key=lambda i: len(encoded[i][0]))
            batches += [part[b : b + config.batch_size] for b in range(0, len(part), config.batch_size)]
        rng.shuffle(batches)
        order += [i for b in batches for i in b]
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, planned // 10)) * max(0.05, 1 - s / planned)
    )
    key = data_hash(examples, config)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    start = 0
    if ckpt.is_file():
        try:
            # Tensors and plain values only: a checkpoint someone put there cannot run code.
            state = torch.load(ckpt, weights_only=True)
            lora_keys = {k for k in peft_model.state_dict() if "lora_" in k}
            if state.get("key") == key and set(state["lora"]) == lora_keys:
                peft_model.load_state_dict(state["lora"], strict=False)
                opt.load_state_dict(state["opt"])
                sched.load_state_dict(state["sched"])
                start = int(state["step"])
        except (OSError, RuntimeError, KeyError, ValueError, EOFError, TypeError, AttributeError):
            start = 0  # a torn or foreign checkpoint: start again
    result = TrainResult(steps=start, planned_steps=planned, loss=float("nan"), seconds=0.0, resumed_from=start)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    t0 = time.monotonic()
    peft_model.train()
    for step in range(start, planned):
        if time.monotonic() - t0 > config.time_limit_s:
            result.stopped_at_limit = True
            break
        batch = [encoded[i] for i in order[step * config.batch_size : (step + 1) * config.batch_size]]
        parts = [batch[m : m + config.micro_batch] for m in range(0, len(batch), max(1, config.micro_batch))]
        step_loss = 0.0
        for chunk in parts:
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, lab) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, : len(lab)] = torch.tensor(lab)
                mask[row, : len(ids)] = 1
            out = peft_model(input_ids=input_ids, attention_mask=mask, labels=labels)
            (out.loss / len(parts)).backward()
            step_loss += float(out.loss.detach()) / len(parts)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        result.steps = step + 1
        result.loss = step_loss
        result.losses.append(result.loss)
        if progress is not None:
            progress(step + 1, planned, result.loss)
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < planned:
            lora_state = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
            _save_atomic(
                {
                    "key": key,
                    "lora": lora_state,
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "step": step + 1,
                },
                ckpt,
            )
    result.seconds = time.monotonic() - t0
    peft_model.eval()
    return peft_model, result

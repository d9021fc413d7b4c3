"""Export a PEFT LoRA of the embedded Llama model as a GGUF LoRA adapter for llama.cpp.

Why a GGUF adapter rather than merged weights: the shipped base model is a Q4_1 GGUF that
llama.cpp runs as it is. Merging a LoRA would mean re-quantising the whole model (and shipping
100 MB per tuning); an adapter of a few MB is loaded next to the unchanged base with
``Llama(model_path=BASE, lora_path=ADAPTER)`` and applied at run time, in full precision, as
``W x + scale * B (A x)`` with ``scale = adapter.lora.alpha / r``.

The file is what llama.cpp's ``llama_adapter_lora_init`` reads (``src/llama-adapter.cpp``):

- metadata ``general.architecture`` (the base model's, read from the base GGUF),
  ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha`` (float32);
- per adapted base tensor ``blk.{i}.attn_q.weight`` (likewise ``attn_k``, ``attn_v``,
  ``attn_output``, ``ffn_gate``, ``ffn_up``, ``ffn_down``) a pair ``….weight.lora_a`` and
  ``….weight.lora_b``. In ggml order the base tensor is ``[n_in, n_out]``, ``lora_a`` must be
  ``[n_in, r]`` and ``lora_b`` ``[r, n_out]``; numpy (and torch) list dimensions the other way
  round, so PEFT's ``lora_A.weight`` (``r × n_in``) and ``lora_B.weight`` (``n_out × r``) are
  written as they are, with no transposition.

Two details make the export exact rather than approximately right:

- Llama GGUF files store the rows of the q and k projections permuted for llama.cpp's rotary
  embedding (the converter's ``permute``: per head, the two interleaved halves of the head
  dimension are regrouped; ``n_head`` groups for q, ``n_head_kv`` for k), and transformers undoes
  that permutation when it loads a GGUF. The LoRA's output rows live in transformers' order, so
  ``lora_b`` of q_proj and k_proj is permuted exactly as the base rows were; ``lora_a`` (which
  indexes the input) is not.
- llama.cpp knows a single alpha and scales every pair by ``alpha / r`` (``r`` read from the
  tensor). Where PEFT's own scaling of a module differs (rsLoRA's ``alpha / sqrt(r)``, per-module
  ``alpha_pattern`` or ``rank_pattern``), the difference is folded into that module's ``lora_b``.

Tensors are stored as float16 by default (an r=8 adapter on all seven projections of
SmolLM2-135M is about 5 MB, small enough to ship in the repository; float32 doubles that and
changes no reading we measured), or float32 on request.
What cannot be expressed as a llama.cpp LoRA (DoRA and other LoRA variants, LoRA bias, modules
trained in full, LoRA on layers llama.cpp has no adapter slot for here) is refused with a
``ValueError`` naming the module, rather than exported silently wrong.

The file is written to a temporary file in the target directory and moved into place with
``os.replace``, so ``path`` holds either the previous file or the complete new one, never half
an adapter. This module is a leaf: nothing imports it at package import time (it needs torch,
peft and gguf, which the coordinator itself does not).
"""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["write_lora_gguf"]

# (parent module, projection) in transformers' Llama -> llama.cpp base tensor stem.
_TENSOR_STEMS: dict[tuple[str, str], str] = {
    ("self_attn", "q_proj"): "attn_q",
    ("self_attn", "k_proj"): "attn_k",
    ("self_attn", "v_proj"): "attn_v",
    ("self_attn", "o_proj"): "attn_output",
    ("mlp", "gate_proj"): "ffn_gate",
    ("mlp", "up_proj"): "ffn_up",
    ("mlp", "down_proj"): "ffn_down",
}
_LAYER_MODULE = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+)$")
_SUPPORTED_ARCHITECTURES = frozenset({"llama"})


class _BaseInfo:
    """What the export needs from the base GGUF: architecture, head counts, tensor shapes."""

    def __init__(self, base_gguf: Path) -> None:
        import gguf

        reader = gguf.GGUFReader(base_gguf)

        def field(key: str) -> Any:
            f = reader.fields.get(key)
            return None if f is None else f.contents()

        arch = field(gguf.Keys.General.ARCHITECTURE)
        if not isinstance(arch, str) or not arch:
            raise ValueError(f"{base_gguf} names no general.architecture; is it a GGUF model?")
        if arch not in _SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"{base_gguf} is a {arch!r} model; only {sorted(_SUPPORTED_ARCHITECTURES)} adapters can be written "
                "(their q/k row layout is known)"
            )
        n_head = field(gguf.Keys.Attention.HEAD_COUNT.format(arch=arch))
        n_head_kv = field(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch))
        if not isinstance(n_head, int):
            raise ValueError(f"{base_gguf} gives no {arch}.attention.head_count")
        self.arch: str = arch
        self.n_head: int = n_head
        self.n_head_kv: int = n_head_kv if isinstance(n_head_kv, int) else n_head
        # ggml order: [n_in, n_out] for a weight matrix.
        self.shapes: dict[str, tuple[int, ...]] = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}


@functools.lru_cache(maxsize=4)
def _read_base_info(path: str, mtime_ns: int, size: int) -> _BaseInfo:
    return _BaseInfo(Path(path))


def _base_info(base_gguf: Path) -> _BaseInfo:
    """The base GGUF's facts, read once per file version (parsing its vocabulary takes seconds)."""
    resolved = base_gguf.resolve()
    stat = resolved.stat()
    return _read_base_info(str(resolved), stat.st_mtime_ns, stat.st_size)


def _rope_permute(rows: npt.NDArray[np.float32], n_head: int) -> npt.NDArray[np.float32]:
    """Reorder output rows from transformers' layout to the GGUF's, per head, as the converter does.

    Within each of ``n_head`` heads the rows ``[first half | second half]`` of the head dimension
    become interleaved pairs ``(first[j], second[j])``.
    """
    n_out = rows.shape[0]
    if n_out % (2 * n_head):
        raise ValueError(f"{n_out} rows cannot be split into {n_head} heads of paired halves")
    half = n_out // n_head // 2
    return rows.reshape(n_head, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _linear_weight(layer: object, name: str) -> npt.NDArray[np.float32]:
    """A LoRA factor's weight as a float32 numpy copy (``out × in``, as torch stores it)."""
    import torch

    if not isinstance(layer, torch.nn.Linear):
        raise ValueError(f"LoRA target {name!r} holds a {type(layer).__name__} factor, not a Linear one")
    with torch.no_grad():
        weight: npt.NDArray[np.float32] = layer.weight.detach().to("cpu", torch.float32).numpy().copy()
    return weight


_Pair = tuple[str, npt.NDArray[np.float32], npt.NDArray[np.float32]]


def _lora_pairs(model: PeftModel, base: _BaseInfo) -> tuple[float, list[_Pair]]:
    """The adapter's alpha and its (base tensor name, lora_a, lora_b) pairs, ready to write."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    active = list(model.active_adapters)
    if len(active) != 1:
        raise ValueError(f"exactly one active LoRA adapter can be exported, the model has {active}")
    adapter = active[0]
    config = model.peft_config[adapter]
    if not isinstance(config, LoraConfig):
        raise ValueError(f"adapter {adapter!r} is {type(config).__name__}, not a LoRA")
    for unsupported in ("modules_to_save", "trainable_token_indices"):
        if getattr(config, unsupported, None):
            raise ValueError(
                f"adapter {adapter!r} trains {unsupported}={getattr(config, unsupported)!r}, "
                "which a llama.cpp LoRA adapter cannot carry"
            )
    alpha = float(config.lora_alpha)

    pairs: list[_Pair] = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        in_linear = adapter in module.lora_A
        if not in_linear and adapter not in module.lora_embedding_A:
            continue
        found = _LAYER_MODULE.search(name)
        stem = _TENSOR_STEMS.get((found.group(2), found.group(3))) if found else None
        if found is None or stem is None or not in_linear:
            raise ValueError(
                f"LoRA target {name!r} has no llama.cpp adapter tensor "
                f"(supported: {', '.join(proj for _, proj in _TENSOR_STEMS)} in the decoder layers)"
            )
        if adapter in getattr(module, "lora_variant", {}):
            variant = type(module.lora_variant[adapter]).__name__
            raise ValueError(f"LoRA target {name!r} uses {variant}, which llama.cpp cannot apply")
        if module.lora_bias.get(adapter, False) or getattr(module.lora_B[adapter], "bias", None) is not None:
            raise ValueError(f"LoRA target {name!r} has a LoRA bias, which llama.cpp cannot apply")

        tensor_name = f"blk.{int(found.group(1))}.{stem}.weight"
        lora_a = _linear_weight(module.lora_A[adapter], name)
        lora_b = _linear_weight(module.lora_B[adapter], name)
        rank = lora_a.shape[0]
        base_shape = base.shapes.get(tensor_name)
        if base_shape is None:
            raise ValueError(f"LoRA target {name!r} maps to {tensor_name!r}, which the base GGUF does not have")
        if len(base_shape) != 2 or lora_a.shape != (rank, base_shape[0]) or lora_b.shape != (base_shape[1], rank):
            raise ValueError(
                f"LoRA target {name!r}: A {lora_a.shape} and B {lora_b.shape} do not fit {tensor_name!r} "
                f"of ggml shape {list(base_shape)} (wrong base model?)"
            )

        # llama.cpp scales by alpha / r (alpha 0 means 1); fold any other PEFT scaling into B.
        llama_scale = alpha / rank if alpha else 1.0
        peft_scale = float(module.scaling[adapter])
        if not math.isclose(peft_scale, llama_scale, rel_tol=1e-6):
            lora_b *= np.float32(peft_scale / llama_scale)

        if stem == "attn_q":
            lora_b = _rope_permute(lora_b, base.n_head)
        elif stem == "attn_k":
            lora_b = _rope_permute(lora_b, base.n_head_kv)
        pairs.append((tensor_name, np.ascontiguousarray(lora_a), np.ascontiguousarray(lora_b)))

    if not pairs:
        raise ValueError(f"adapter {adapter!r} adapts no module; there is nothing to export")
    return alpha, pairs


def write_lora_gguf(model: PeftModel, path: Path, *, base_gguf: Path, half: bool = True) -> Path:
    """Write the active LoRA of a PEFT-wrapped ``LlamaForCausalLM`` as a llama.cpp GGUF adapter.

    ``base_gguf`` is the GGUF model the adapter will be loaded over (its architecture and head
    counts decide the metadata and the q/k row order; its tensor shapes are checked). The file
    at ``path`` is replaced atomically. Returns ``path``.

    Raises ``ValueError`` if the LoRA has a target (or a feature) that llama.cpp cannot apply.
    """
    import gguf

    path = Path(path)
    base = _base_info(Path(base_gguf))
    alpha, pairs = _lora_pairs(model, base)
    np_dtype = np.float16 if half else np.float32

    # A hidden, unique sibling: same file system (so os.replace is atomic), permissions per umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp, base.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for tensor_name, lora_a, lora_b in pairs:
            writer.add_tensor(f"{tensor_name}.lora_a", lora_a.astype(np_dtype))
            writer.add_tensor(f"{tensor_name}.lora_b", lora_b.astype(np_dtype))
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.flush()
        finally:
            writer.close()
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

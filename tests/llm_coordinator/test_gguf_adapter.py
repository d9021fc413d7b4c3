"""A PEFT LoRA exported by ``write_lora_gguf`` does in llama.cpp what it does in transformers.

The base model is the shipped Q4_1 GGUF: transformers loads it de-quantised to float32, llama.cpp
runs it quantised (activations too), so logits never agree exactly. What is compared is the
adapter's *effect*: (logits with adapter - logits without) in llama.cpp against the same
difference in transformers, by correlation and by top-1 agreement of the adapted logits. A
seeded random LoRA (r=8, alpha=16, all seven projections, B non-zero) moves the top-1 token on
about half of the positions, so a wrong orientation, scale or row order cannot pass unseen.

Measured on the 2-core machine (seed 0, 54-token prompt): effect correlation 0.994 (seeds 0-3:
0.994-0.997), adapted top-1 agreement 0.93 (0.93-0.98; the base alone agrees on 0.96); with the
q/k row permutation skipped the correlation drops to 0.82 (0.82-0.93) and top-1 to 0.59
(0.59-0.74). Adapter file 9.8 MB (float32). The figures are printed (``-s``).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np
import numpy.typing as npt
import peft
import pytest
import torch
import transformers
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from llm_coordinator.backends.llama import default_model_path
from llm_coordinator.tuning import gguf_adapter
from llm_coordinator.tuning.gguf_adapter import write_lora_gguf

pytestmark = pytest.mark.slow

PROMPT = (
    "Move the red part from the conveyor to the tray, then inspect it with the camera and report the "
    "result. If the part is damaged, put it in the reject bin and tell the operator; otherwise stack it "
    "on the pallet next to the press. The robot should"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA, SEED = 8, 16.0, 0

# Thresholds, with the measured figures above: the effect correlation is 0.994-0.997 when right
# and 0.82-0.93 with q/k left unpermuted.
MIN_EFFECT_CORRELATION = 0.98
MIN_TOP1_AGREEMENT = 0.85
MAX_UNPERMUTED_CORRELATION = 0.96

Logits = npt.NDArray[np.float64]


@dataclass
class Reference:
    """The transformers side, computed once: the peft model and its logits with and without the LoRA."""

    model: Any  # peft.PeftModel
    base_gguf: Path
    tokens: list[int]
    hf_base: Logits
    hf_adapted: Logits
    cpp_base: Logits


def _llama(base_gguf: Path, adapter: Path | None = None) -> Any:
    return llama_cpp.Llama(
        model_path=str(base_gguf),
        lora_path=None if adapter is None else str(adapter),
        n_ctx=512,
        n_threads=2,
        verbose=False,
        logits_all=True,
    )


def _cpp_logits(base_gguf: Path, tokens: list[int], adapter: Path | None = None) -> Logits:
    with contextlib.closing(_llama(base_gguf, adapter)) as llm:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float64)


def _correlation(x: Logits, y: Logits) -> float:
    a = x.ravel() - x.mean()
    b = y.ravel() - y.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _top1(x: Logits, y: Logits) -> float:
    return float(np.mean(x.argmax(-1) == y.argmax(-1)))


@pytest.fixture(scope="module")
def reference() -> Reference:
    started = time.monotonic()
    base_gguf = default_model_path()
    with contextlib.closing(_llama(base_gguf)) as llm:
        tokens = llm.tokenize(PROMPT.encode(), add_bos=False)
        llm.eval(tokens)
        cpp_base = np.array(llm.scores[: len(tokens)], dtype=np.float64)

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(base_gguf.parent), gguf_file=base_gguf.name, dtype=torch.float32
    )
    # The weights are de-quantised float32 now; the GGUF marker would only get in peft's way.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    config = peft.LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, init_lora_weights=False
    )
    torch.manual_seed(SEED)
    with warnings.catch_warnings():
        # peft asks transformers a question it has renamed; nothing of ours.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = peft.get_peft_model(model, config)
    peft_model.eval()
    with torch.no_grad():
        ids = torch.tensor([tokens])
        hf_adapted = peft_model(ids).logits[0].double().numpy()
        with peft_model.disable_adapter():
            hf_base = peft_model(ids).logits[0].double().numpy()
    print(f"\nreference ready in {time.monotonic() - started:.1f} s ({len(tokens)} tokens)")
    return Reference(peft_model, base_gguf, tokens, hf_base, hf_adapted, cpp_base)


def _effect(ref: Reference, adapter: Path) -> tuple[float, float]:
    cpp_adapted = _cpp_logits(ref.base_gguf, ref.tokens, adapter)
    corr = _correlation(cpp_adapted - ref.cpp_base, ref.hf_adapted - ref.hf_base)
    return corr, _top1(cpp_adapted, ref.hf_adapted)


def test_adapter_does_in_llama_cpp_what_it_does_in_transformers(reference: Reference, tmp_path: Path) -> None:
    adapter = write_lora_gguf(reference.model, tmp_path / "adapter.gguf", base_gguf=reference.base_gguf)
    assert adapter == tmp_path / "adapter.gguf"

    reader = gguf.GGUFReader(adapter)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(ALPHA)
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    assert len(shapes) == 30 * len(TARGETS) * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == [576, RANK]  # ggml order: [n_in, r]
    assert shapes["blk.0.attn_k.weight.lora_b"] == [RANK, 192]  # [r, n_out]
    assert shapes["blk.29.ffn_down.weight.lora_a"] == [1536, RANK]

    corr, top1 = _effect(reference, adapter)
    changed = float(np.mean(reference.hf_adapted.argmax(-1) != reference.hf_base.argmax(-1)))
    print(
        f"effect correlation {corr:.4f}, adapted top-1 agreement {top1:.3f} "
        f"(base alone {_top1(reference.cpp_base, reference.hf_base):.3f}), "
        f"LoRA moves top-1 on {changed:.2f} of positions, file {adapter.stat().st_size / 1e6:.1f} MB"
    )
    assert changed > 0.2, "the LoRA is too weak to test anything"
    assert corr >= MIN_EFFECT_CORRELATION
    assert top1 >= MIN_TOP1_AGREEMENT


def test_skipping_the_qk_permutation_is_clearly_worse(
    reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_adapter, "_rope_permute", lambda rows, n_head: rows)
    adapter = write_lora_gguf(reference.model, tmp_path / "unpermuted.gguf", base_gguf=reference.base_gguf)
    corr, top1 = _effect(reference, adapter)
    print(f"unpermuted q/k: effect correlation {corr:.4f}, adapted top-1 agreement {top1:.3f}")
    assert corr <= MAX_UNPERMUTED_CORRELATION
    assert top1 < MIN_TOP1_AGREEMENT


def test_a_failed_write_leaves_no_file(reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_midway(self: Any, *, progress: bool = False) -> None:
        self.write_ti_data_to_file()
        self.fout[0].write(b"\0" * 4096)  # some tensor bytes are on disk already
        raise OSError("disk full")

    path = tmp_path / "adapter.gguf"
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_lora_gguf(reference.model, path, base_gguf=reference.base_gguf)
    assert os.listdir(tmp_path) == []

    path.write_bytes(b"previous adapter")
    with pytest.raises(OSError, match="disk full"):
        write_lora_gguf(reference.model, path, base_gguf=reference.base_gguf)
    assert os.listdir(tmp_path) == ["adapter.gguf"]
    assert path.read_bytes() == b"previous adapter"


def _tiny_peft_model(lora: peft.LoraConfig) -> Any:
    """One decoder layer shaped like the shipped model's, random, with ``lora`` on it."""
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=1,
        num_attention_heads=9,
        num_key_value_heads=3,
    )
    torch.manual_seed(SEED)
    model = transformers.LlamaForCausalLM(config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, lora)


def test_lora_b_rows_follow_the_gguf_order_and_carry_peft_scaling(tmp_path: Path) -> None:
    # rsLoRA scales by alpha / sqrt(r), llama.cpp by alpha / r: the ratio sqrt(r) goes into lora_b.
    # transformers' own GGUF un-permutation of q/k rows must give PEFT's lora_B back.
    rank = 4
    lora = peft.LoraConfig(
        r=rank, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], use_rslora=True, init_lora_weights=False
    )
    model = _tiny_peft_model(lora)
    # float32 here, to compare exactly (the default, float16, rounds; the test above measures it).
    adapter = write_lora_gguf(model, tmp_path / "adapter.gguf", base_gguf=default_model_path(), half=False)
    written = {t.name: np.array(t.data) for t in gguf.GGUFReader(adapter).tensors}
    assert sorted(written) == sorted(
        f"blk.0.{s}.weight.lora_{ab}" for s in ("attn_q", "attn_k", "attn_v") for ab in "ab"
    )

    attn = model.base_model.model.model.layers[0].self_attn
    # What transformers does to the base q/k rows when it loads the GGUF.
    unpermute = LlamaTensorProcessor(config={})._reverse_permute_weights
    for stem, proj, n_head in (("attn_q", attn.q_proj, 9), ("attn_k", attn.k_proj, 3), ("attn_v", attn.v_proj, None)):
        lora_a = proj.lora_A["default"].weight.detach().numpy()
        lora_b = proj.lora_B["default"].weight.detach().numpy() * np.sqrt(rank)
        np.testing.assert_allclose(written[f"blk.0.{stem}.weight.lora_a"], lora_a)
        rows = written[f"blk.0.{stem}.weight.lora_b"]
        if n_head is not None:
            assert not np.allclose(rows, lora_b)
            rows = unpermute(rows, 9, n_head)
        np.testing.assert_allclose(rows, lora_b, rtol=1e-6)


def test_a_target_llama_cpp_cannot_adapt_is_refused_by_name(tmp_path: Path) -> None:
    peft_model = _tiny_peft_model(peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(ValueError, match="lm_head"):
        write_lora_gguf(peft_model, tmp_path / "adapter.gguf", base_gguf=default_model_path())
    assert os.listdir(tmp_path) == []

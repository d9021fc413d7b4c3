"""``atelier model tune``: one plant's model, from its description and its people's decisions.

1. Examples: generated from the plant (:mod:`~llm_coordinator.tuning.data`), plus what the
   store's supervisors and operators decided (:mod:`~llm_coordinator.tuning.feedback`, weighted).
2. A dev share of the generated examples is held out; the rest trains a LoRA
   (:mod:`~llm_coordinator.tuning.train`), resumable, within a time limit.
3. The adapter is exported for llama.cpp (:mod:`~llm_coordinator.tuning.gguf_adapter`) and
   measured *through llama.cpp with the grammar*, as the planner will run it: exact readings
   on the dev share and on a sample of the training share, and the median time of a reading.
4. The version is published with its model card (:mod:`~llm_coordinator.tuning.models`).
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_coordinator.reading import Reading, parse_reading, reading_schema
from llm_coordinator.store import Store
from llm_coordinator.tuning.config import TuneConfig
from llm_coordinator.tuning.data import Example, Generator, HeldOut, counts, split_dev
from llm_coordinator.tuning.feedback import store_feedback
from llm_coordinator.tuning.models import ADAPTER, next_version, publish, sha256_of
from llm_coordinator.tuning.retrieval import ExampleIndex
from llm_coordinator.tuning.train import Progress, chat, load_base, train
from plant.config import PlantDescription

#: Fewest generated examples a plant must yield to be worth tuning.
MIN_EXAMPLES = 20
#: How many times each decision of the plant's people counts against one generated example.
FEEDBACK_WEIGHT = 4


class TuneError(RuntimeError):
    """Tuning cannot start or finish; the message says why and what to do."""


@dataclass
class TuneReport:
    version: str
    path: Path
    card: dict[str, Any]
    log: list[str] = field(default_factory=list)


def same_reading(a: Reading, b: Reading) -> bool:
    """Whether two readings ask for the same: equal goals for a plan; for a question back or a
    refusal, the outcome (its wording is free)."""
    if a.outcome != b.outcome:
        return False
    if a.outcome != "plan":
        return True
    return a.model_dump(exclude={"question", "reason", "declined"}) == b.model_dump(
        exclude={"question", "reason", "declined"}
    )


async def _measure(
    plant: PlantDescription, adapter: Path, examples: Sequence[Example], threads: int, shots: ExampleIndex | None = None
) -> tuple[int, list[float], list[str]]:
    """(exact readings, seconds per reading, misses) through llama.cpp with the adapter."""
    from llm_coordinator.backends.llama import LlamaBackend
    from llm_coordinator.config import LlamaBackendConfig
    from llm_coordinator.interface import ChatMessage

    backend = LlamaBackend(LlamaBackendConfig(adapter=adapter, n_threads=threads, n_ctx=2048))
    schema = reading_schema(plant)
    right, times, misses = 0, [], list[str]()
    for e in examples:
        examples_shown = shots.similar(e.order, 2, exclude=e.order) if shots is not None else []
        messages = [ChatMessage(m["role"], m["content"]) for m in chat(plant.name, e.order, examples_shown)]  # type: ignore[arg-type]
        t0 = time.monotonic()
        c = await backend.complete(messages, schema, schema_name="reading", max_tokens=400, timeout_s=120)
        times.append(time.monotonic() - t0)
        try:
            ok = same_reading(parse_reading(c.text), parse_reading(e.answer))
        except ValueError:
            ok = False
        right += ok
        if not ok and len(misses) < 12:
            misses.append(f"{e.order[:100]!r} -> {c.text[:200]}")
    await backend.aclose()
    return right, times, misses


def tune_plant(
    plant: PlantDescription,
    model_dir: Path,
    *,
    store: Store | None = None,
    config: TuneConfig | None = None,
    base_gguf: Path | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] = lambda _: None,
    command: str = "",
    held_out: Sequence[str] = (),
    promote: bool = False,
) -> TuneReport:
    """Tune ``plant``'s model into ``model_dir`` (see the module docstring)."""
    from llm_coordinator.backends.llama import default_model_path
    from llm_coordinator.tuning.gguf_adapter import write_lora_gguf

    config = config or TuneConfig()
    base = base_gguf or default_model_path()
    t_start = time.monotonic()
    generated = Generator(plant, seed=config.seed).generate(config.per_shape, held_out=held_out)
    if len(generated) < MIN_EXAMPLES:
        raise TuneError(
            f"plant {plant.name} yields {len(generated)} examples (at least {MIN_EXAMPLES} are needed): "
            "describe its agents' skills, recipes and locations first"
        )
    decided: list[Example] = []
    skipped: list[str] = []
    if store is not None:
        fb = store_feedback(store, plant)
        held = HeldOut(held_out)
        decided = [e for e in fb.examples if not held.near(e.order)]
        skipped = fb.skipped + [f"{e.source}: a held-out order" for e in fb.examples if held.near(e.order)]
    train_set, dev_set = split_dev(generated, config.dev_fraction, config.seed)
    train_set = train_set + [e for e in decided for _ in range(FEEDBACK_WEIGHT)]
    say(
        f"{len(generated)} generated examples ({len(dev_set)} held out as dev), "
        f"{len(decided)} from the store's decisions ({len(skipped)} skipped)"
    )
    index = ExampleIndex([(e.order, e.answer) for e in train_set])
    rng = random.Random(config.seed)
    shots = [
        index.similar(e.order, 2, exclude=e.order) if rng.random() < config.with_examples else [] for e in train_set
    ]
    model_dir.mkdir(parents=True, exist_ok=True)
    work = model_dir / ".work"
    say(f"loading the base model {base.name} into torch")
    tok, model = load_base(base, config.threads)
    peft_model, result = train(model, tok, plant.name, train_set, shots, config, work, progress)
    say(
        f"trained {result.steps} of {result.planned_steps} steps in {result.seconds:.0f} s"
        + (f" (resumed at step {result.resumed_from})" if result.resumed_from else "")
        + (" (stopped at the time limit)" if result.stopped_at_limit else "")
    )
    staging = work / f"staging-{int(time.time())}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        write_lora_gguf(peft_model, staging / ADAPTER, base_gguf=base)
        del peft_model
        say("measuring the adapter through llama.cpp on the dev examples")
        # The tuned model alone (no retrieved examples), as the figures of the card say.
        dev_right, dev_times, dev_misses = asyncio.run(_measure(plant, staging / ADAPTER, dev_set, config.threads))
        sample = random.Random(config.seed).sample(train_set, min(len(train_set), max(10, len(dev_set) // 2)))
        train_right, _, _ = asyncio.run(_measure(plant, staging / ADAPTER, sample, config.threads))
        sha = sha256_of(staging / ADAPTER)
        version = next_version(model_dir, plant.name, sha)
        card: dict[str, Any] = {
            "version": version,
            "plant": plant.name,
            "base_model": base.name,
            "base_sha256": sha256_of(base),
            "adapter_sha256": sha,
            "adapter_bytes": (staging / ADAPTER).stat().st_size,
            "method": "LoRA (peft) on the attention and MLP projections; GGUF adapter for llama.cpp",
            "config": config.key(),
            "data": {
                "generated": counts(generated),
                "dev": counts(dev_set),
                "from_store": counts(decided),
                "store_skipped": skipped[:50],
                "feedback_weight": FEEDBACK_WEIGHT,
                "held_out_orders": len(held_out),
                "provenance": sorted({e.source for e in decided})[:500],
            },
            "training": {
                "steps": result.steps,
                "planned_steps": result.planned_steps,
                "resumed_from": result.resumed_from,
                "stopped_at_time_limit": result.stopped_at_limit,
                "final_loss": round(result.loss, 4),
                "loss_first_last10": [
                    round(statistics.fmean(result.losses[:10]), 4) if result.losses else None,
                    round(statistics.fmean(result.losses[-10:]), 4) if result.losses else None,
                ],
                "seconds": round(result.seconds, 1),
            },
            "figures": {
                "dev_exact": f"{dev_right}/{len(dev_set)}",
                "train_sample_exact": f"{train_right}/{len(sample)}",
                "reading_median_s": round(statistics.median(dev_times), 3) if dev_times else None,
                "dev_misses": dev_misses,
            },
            "wall_time_s": round(time.monotonic() - t_start, 1),
            "machine": f"{platform.machine()}, {config.threads} threads",
            "reproduce": command or f"atelier model tune --plant PLANT_FILE --out {model_dir}",
        }
        md = _card_md(card)
        previous = _current_dev(model_dir)
        ours = dev_right / len(dev_set) if dev_set else 0.0
        promote = promote or previous is None or ours >= previous
        path = publish(model_dir, staging, version, card, md, make_current=promote)
        if not promote:
            say(
                f"{version} is kept beside the current version, which scored better on its dev examples "
                f"({previous:.0%} against {ours:.0%}); write its name into CURRENT, or tune with --promote, to run it"
            )
        ckpt = work / "checkpoint.pt"
        if ckpt.exists() and not result.stopped_at_limit:
            ckpt.unlink()  # finished: a later run starts afresh (one stopped at the limit resumes)
        median = card["figures"]["reading_median_s"]
        say(f"published {version}: dev {dev_right}/{len(dev_set)} exact, reading median {median} s")
        return TuneReport(version, path, card)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # a published version was moved out of it


def _current_dev(model_dir: Path) -> float | None:
    """The dev share right of the version the directory runs now (None: none runs)."""
    from llm_coordinator.tuning.models import ModelDirError, resolve

    try:
        figure = str(resolve(model_dir).card["figures"]["dev_exact"])
        right, n = (int(x) for x in figure.split("/"))
    except (ModelDirError, KeyError, ValueError, TypeError):
        return None
    return right / n if n else None


def _card_md(card: dict[str, Any]) -> str:
    f, t, d = card["figures"], card["training"], card["data"]
    lines = [
        f"# Model card: {card['version']}",
        "",
        f"Plant **{card['plant']}**; base `{card['base_model']}` (unchanged, sha256 {card['base_sha256'][:16]}...); "
        f"{card['method']}; adapter {card['adapter_bytes'] / 1e6:.1f} MB.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| dev readings exact (held out; llama.cpp + grammar; no retrieval) | {f['dev_exact']} |",
        f"| training sample exact | {f['train_sample_exact']} |",
        f"| median time of a reading | {f['reading_median_s']} s |",
        f"| steps | {t['steps']} of {t['planned_steps']} ({t['seconds']} s) |",
        f"| loss, first and last 10 steps | {t['loss_first_last10']} |",
        f"| wall time | {card['wall_time_s']} s on {card['machine']} |",
        "",
        f"Generated examples by shape: {json.dumps(d['generated'])}",
        "",
        f"From the store's decisions: {json.dumps(d['from_store'])} (each counted {d['feedback_weight']} times)",
        "",
        f"Seed and configuration: `{json.dumps(card['config'], sort_keys=True)}`",
        "",
        f"Reproduce: `{card['reproduce']}`",
        "",
    ]
    return "\n".join(lines)

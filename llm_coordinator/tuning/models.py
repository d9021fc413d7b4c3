"""A plant's model directory: tuned versions side by side, and which one the plant runs.

::

    models/PLANT/
      CURRENT                 the version the plant runs (one line), written last, atomically
      coordinator.yaml        the coordinator configuration that selects it (mode: tuned)
      PLANT-001-1a2b3c4d/     one version: adapter.gguf, card.json, card.md
      .work/                  checkpoints of a run under way (resumable), staging

A version is written complete into ``.work`` and renamed into place; only then does
``CURRENT`` move to it. A run that dies leaves ``CURRENT`` and every published version as they
were. Older versions stay (a supervisor can go back by writing their name into ``CURRENT``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.checkpoint import sha256

ADAPTER = "adapter.gguf"
CARD = "card.json"
CURRENT = "CURRENT"
CONFIG = "coordinator.yaml"


class ModelDirError(ValueError):
    """A model directory or adapter that cannot be used, with the path and the reason."""


@dataclass(frozen=True)
class TunedModel:
    """One published version: its adapter file, name and card."""

    adapter: Path
    version: str
    card: dict[str, Any]


sha256_of = sha256  # one file hash for checkpoints, policies and adapters


def resolve(path: Path) -> TunedModel:
    """The version a path means: a model directory (its ``CURRENT``), a version directory, or
    an adapter file. Raises :class:`ModelDirError` naming what is missing."""
    path = Path(path)
    if path.is_file():
        card_file = path.with_name(CARD)
        card = _card(card_file) if card_file.is_file() else {}
        return TunedModel(path, str(card.get("version") or path.parent.name), card)
    if not path.is_dir():
        raise ModelDirError(f"no tuned model at {path}: neither an adapter file nor a model directory")
    version_dir = path
    if (path / CURRENT).is_file():
        name = (path / CURRENT).read_text(encoding="utf-8").strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", name) or name.startswith("."):
            raise ModelDirError(f"{path / CURRENT} names no version ({name[:60]!r})")
        version_dir = path / name
    adapter = version_dir / ADAPTER
    if not adapter.is_file():
        raise ModelDirError(f"{version_dir} holds no {ADAPTER}: tune the plant's model (atelier model tune)")
    if not (version_dir / CARD).is_file():
        raise ModelDirError(f"{version_dir} holds no {CARD}: a version is published with its card")
    card = _card(version_dir / CARD)
    sha = card.get("adapter_sha256")
    if not sha or sha256_of(adapter) != sha:
        raise ModelDirError(f"{adapter} does not match the sha256 its card records: a changed or torn file")
    return TunedModel(adapter, version_dir.name, card)


def _card(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{path} is not a model card: {exc}") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{path} is not a model card: not a JSON object")
    return data


def next_version(model_dir: Path, plant: str, adapter_sha: str) -> str:
    taken = [p.name for p in model_dir.glob(f"{plant}-[0-9][0-9][0-9]-*") if p.is_dir()]
    n = 1 + max((int(t.split("-")[-2]) for t in taken if t.split("-")[-2].isdigit()), default=0)
    return f"{plant}-{n:03d}-{adapter_sha[:8]}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def publish(
    model_dir: Path, staging: Path, version: str, card: dict[str, Any], card_md: str, *, make_current: bool = True
) -> Path:
    """Move a finished ``staging`` folder (holding the adapter) into place as ``version`` with
    its card, then (``make_current``) point ``CURRENT`` at it and write the configuration that
    selects it."""
    (staging / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (staging / "card.md").write_text(card_md, encoding="utf-8")
    final = model_dir / version
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    if not make_current:
        return final
    write_atomic(model_dir / CURRENT, version + "\n")
    config = model_dir / CONFIG
    if not config.exists():
        write_atomic(
            config,
            "# The coordinator configuration of this plant's tuned model (atelier plan --config FILE).\n"
            "# The adapter path is relative to this file; CURRENT names the version it runs.\n"
            "mode: tuned\nmodel:\n  backend:\n    backend: llama\n    adapter: .\n",
        )
    return final

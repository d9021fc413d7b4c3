"""What the coordinator core needs from a language model: one port, several backends.

A backend turns a list of chat messages into one JSON document that validates against a
JSON Schema. Backends: the embedded llama.cpp model (``backends.llama``), any OpenAI-compatible
endpoint (``backends.openai``) and a scripted model for tests (``backends.scripted``). They are
chosen by name through :mod:`llm_coordinator.backends` and never imported directly by the core.

The model is given no tools: it writes a document, and deterministic code decides what happens
to it. Nothing a model writes can change limits, zones, the e-stop or approvals.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

JsonSchema = dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation with the model."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Completion:
    """What a backend returned: the raw text (not yet validated) and what it cost."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0


class BackendError(Exception):
    """The model could not answer: the server failed, refused, or sent something unusable."""


class BackendTimeout(BackendError, TimeoutError):
    """The model did not answer within its time budget (``timeout_s``)."""


class BackendUnavailable(BackendError):
    """The backend cannot start: a missing model file, a missing package, a bad endpoint."""


@dataclass(frozen=True)
class Request:
    """One call of :meth:`LLMBackend.complete`, as a backend's :meth:`~LLMBackend._answer` gets it."""

    messages: list[ChatMessage]
    schema: JsonSchema
    schema_name: str
    max_tokens: int
    timeout_s: float

    def chat(self) -> list[dict[str, str]]:
        """The messages as chat-completion dictionaries (``role``, ``content``)."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


class LLMBackend(ABC):
    """A language model that answers with JSON constrained by a schema.

    :meth:`complete` is a coroutine that never blocks the event loop. It raises
    :class:`BackendTimeout` when the answer takes longer than ``timeout_s`` seconds (the
    generation is then stopped, not left running), and :class:`BackendError` for any other
    failure. The returned text is whatever the model wrote: callers validate it.

    A backend implements :meth:`_answer` (and :meth:`_ready` if it loads something first);
    the time budget and the timing are kept here, once for every backend.
    """

    name: str
    #: Whether a warm-up (:meth:`Coordinator.warm_up`) may ask this model a question: true
    #: only where an answer costs nothing but this machine's time and changes nothing (not a
    #: remote endpoint, which may bill it; not a scripted model, whose replies it would use up).
    warm_up_question: bool = False

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        schema: JsonSchema,
        *,
        schema_name: str = "answer",
        max_tokens: int = 512,
        timeout_s: float = 60.0,
    ) -> Completion:
        """Generate one answer constrained by ``schema``."""
        start = time.monotonic()
        await self._ready()
        try:
            answer = await asyncio.wait_for(
                self._answer(Request(list(messages), schema, schema_name, max_tokens, timeout_s)), timeout_s
            )
        except TimeoutError:
            raise BackendTimeout(f"{self.name} did not answer within {timeout_s:g} s") from None
        return replace(answer, elapsed_s=time.monotonic() - start)

    async def warm_up(self) -> None:
        """Load what answering needs now, so that a long-running process's first work order
        does not wait for it (raises as :meth:`complete` would)."""
        await self._ready()

    async def _ready(self) -> None:  # noqa: B027 - a hook; most backends need nothing here
        """Load what answering needs, outside the time budget (nothing by default)."""

    @abstractmethod
    async def _answer(self, request: Request) -> Completion:
        """Generate. Cancelled when the time budget runs out: it must then stop generating before
        it returns. A :class:`TimeoutError` it raises also ends in :class:`BackendTimeout`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the model or the connection; safe to call twice."""

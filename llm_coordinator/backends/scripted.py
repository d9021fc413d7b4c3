"""A model that follows a script, for the paths a real model rarely takes.

After pydantic-ai's function model: the script is either a list of replies (from
:class:`~llm_coordinator.config.ScriptedBackendConfig`) or a function of the messages and
schema. A reply may be text, a delay, an error, or silence (never answers: the timeout path).
The last reply of a list repeats. Every call is kept in ``calls`` so a test can read what the
coordinator sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from llm_coordinator.config import ScriptedBackendConfig, ScriptedReply
from llm_coordinator.interface import BackendError, BackendTimeout, ChatMessage, Completion, JsonSchema

ScriptFunction = Callable[[Sequence[ChatMessage], JsonSchema], str | Awaitable[str | None] | None]


@dataclass
class ScriptedCall:
    """What the coordinator asked: the messages, the schema and its name."""

    messages: list[ChatMessage]
    schema: JsonSchema
    schema_name: str
    timeout_s: float


@dataclass
class ScriptedBackend:
    """A backend whose answers come from a script. ``None`` as an answer means silence."""

    script: ScriptedBackendConfig | ScriptFunction
    name: str = "scripted"
    calls: list[ScriptedCall] = field(default_factory=list)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        schema: JsonSchema,
        *,
        schema_name: str = "answer",
        max_tokens: int = 512,
        timeout_s: float = 60.0,
    ) -> Completion:
        """Answer from the script; silence or a long delay ends in :class:`BackendTimeout`."""
        self.calls.append(ScriptedCall(list(messages), schema, schema_name, timeout_s))
        start = time.monotonic()
        try:
            text = await asyncio.wait_for(self._answer(messages, schema, len(self.calls) - 1), timeout_s)
        except TimeoutError:
            raise BackendTimeout(f"the scripted model did not answer within {timeout_s:g} s") from None
        return Completion(text=text, model="scripted", elapsed_s=time.monotonic() - start)

    async def _answer(self, messages: Sequence[ChatMessage], schema: JsonSchema, index: int) -> str:
        if isinstance(self.script, ScriptedBackendConfig):
            reply: ScriptedReply = self.script.replies[min(index, len(self.script.replies) - 1)]
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.error is not None:
                raise BackendError(reply.error)
            text = reply.text
        else:
            out = self.script(messages, schema)
            text = await out if isinstance(out, Awaitable) else out
        if text is None:
            await asyncio.Event().wait()  # silence: only the timeout ends this call
            raise AssertionError("unreachable")
        return text

    async def aclose(self) -> None:
        """Nothing to release."""

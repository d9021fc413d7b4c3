"""A model that follows a script, for the paths a real model rarely takes.

After pydantic-ai's function model: the script is either a list of replies (from
:class:`~llm_coordinator.config.ScriptedBackendConfig`) or a function of the messages and
schema. A reply may be text, a delay, an error, or silence (never answers: the timeout path).
The last reply of a list repeats. Every call is kept in ``calls`` so a test can read what the
coordinator sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from llm_coordinator.config import ScriptedBackendConfig, ScriptedReply
from llm_coordinator.interface import BackendError, ChatMessage, Completion, JsonSchema, LLMBackend, Request

ScriptFunction = Callable[[Sequence[ChatMessage], JsonSchema], str | Awaitable[str | None] | None]


@dataclass
class ScriptedBackend(LLMBackend):
    """A backend whose answers come from a script. ``None`` as an answer means silence (only
    the time budget ends it, in :class:`~llm_coordinator.interface.BackendTimeout`)."""

    script: ScriptedBackendConfig | ScriptFunction
    name: str = "scripted"
    #: What the coordinator asked, one request per call.
    calls: list[Request] = field(default_factory=list)

    async def _answer(self, request: Request) -> Completion:
        self.calls.append(request)
        if isinstance(self.script, ScriptedBackendConfig):
            reply: ScriptedReply = self.script.replies[min(len(self.calls), len(self.script.replies)) - 1]
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.error is not None:
                raise BackendError(reply.error)
            text = reply.text
        else:
            out = self.script(request.messages, request.schema)
            text = await out if isinstance(out, Awaitable) else out
        if text is None:
            await asyncio.Event().wait()  # silence: only the timeout ends this call
            raise AssertionError("unreachable")
        return Completion(text=text, model="scripted")

    async def aclose(self) -> None:
        """Nothing to release."""

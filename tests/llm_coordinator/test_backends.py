"""Model backends: the registry, timeouts, the embedded model, and an OpenAI-compatible endpoint.

The OpenAI-compatible test serves ``/v1/chat/completions`` from a real HTTP server in this test
(stdlib ``http.server`` on a free loopback port) that answers with the real embedded model under
the ``response_format`` JSON Schema it receives: the client under test speaks real HTTP to a
real model, as it would to a llama.cpp server or vLLM.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llm_coordinator import backends
from llm_coordinator.backends.scripted import ScriptedBackend
from llm_coordinator.config import OpenAIBackendConfig, ScriptedBackendConfig, ScriptedReply
from llm_coordinator.interface import BackendError, BackendTimeout, BackendUnavailable, ChatMessage, LLMBackend

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
    "required": ["colour"],
    "additionalProperties": False,
}
ASK = [ChatMessage("system", "Answer with JSON."), ChatMessage("user", "What colour is the sky?")]


def test_registry_builds_by_name_and_names_what_is_missing() -> None:
    b = backends.make_backend(ScriptedBackendConfig(replies=[ScriptedReply(text="{}")]))
    assert isinstance(b, ScriptedBackend)
    with pytest.raises(BackendUnavailable, match="no backend named 'nope'"):
        backends.make_backend(type("C", (), {"backend": "nope"})())
    backends.register("broken", "llm_coordinator.backends.missing:Thing")
    try:
        with pytest.raises(BackendUnavailable, match="cannot be loaded"):
            backends.make_backend(type("C", (), {"backend": "broken"})())
    finally:
        backends.unregister("broken")
    assert "broken" not in backends.registered()


async def test_scripted_errors_and_silence() -> None:
    b = ScriptedBackend(ScriptedBackendConfig(replies=[ScriptedReply(error="boom"), ScriptedReply(text=None)]))
    with pytest.raises(BackendError, match="boom"):
        await b.complete(ASK, SCHEMA)
    with pytest.raises(BackendTimeout):
        await b.complete(ASK, SCHEMA, timeout_s=0.05)


async def test_embedded_model_answers_within_the_schema(llama: LLMBackend) -> None:
    c = await llama.complete(ASK, SCHEMA, max_tokens=20, timeout_s=60)
    assert json.loads(c.text)["colour"] in ("red", "green", "blue")
    assert c.completion_tokens > 0 and "SmolLM2-135M" in c.model


async def test_embedded_model_stops_at_its_timeout(llama: LLMBackend) -> None:
    # The grammar makes the story at least 4000 characters long, so no sampling luck can end it
    # inside the timeout (the small model takes tens of seconds for that many).
    long_schema = {
        "type": "object",
        "properties": {"story": {"type": "string", "minLength": 4000}},
        "required": ["story"],
    }
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BackendTimeout):
        await llama.complete(
            [ChatMessage("user", "Tell a very long story.")], long_schema, max_tokens=2000, timeout_s=0.5
        )
    assert loop.time() - start < 5.0
    # The model is free again at once: the generation was stopped, not left running.
    c = await llama.complete(ASK, SCHEMA, max_tokens=20, timeout_s=60)
    assert json.loads(c.text)["colour"]


@pytest.fixture
def openai_server(llama: LLMBackend) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    seen: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            messages = [ChatMessage(m["role"], m["content"]) for m in body["messages"]]
            schema = body["response_format"]["json_schema"]["schema"]
            c = loop.run_until_complete(llama.complete(messages, schema, max_tokens=body["max_tokens"]))
            out = json.dumps(
                {
                    "model": body["model"],
                    "choices": [{"message": {"role": "assistant", "content": c.text}}],
                    "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    loop.close()


async def test_openai_compatible_endpoint(openai_server: str) -> None:
    b = backends.make_backend(OpenAIBackendConfig(base_url=openai_server, model="smollm2-135m"))
    try:
        c = await b.complete(ASK, SCHEMA, max_tokens=20, timeout_s=60)
        assert json.loads(c.text)["colour"] in ("red", "green", "blue")
        assert c.model == "smollm2-135m" and c.completion_tokens > 0
    finally:
        await b.aclose()


async def test_openai_endpoint_errors_and_timeouts() -> None:
    b = backends.make_backend(OpenAIBackendConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    try:
        with pytest.raises(BackendError):
            await b.complete(ASK, SCHEMA, timeout_s=2)
    finally:
        await b.aclose()

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
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_cpp.llama_grammar import LlamaGrammar

from llm_coordinator import backends
from llm_coordinator.backends.llama import LlamaBackend, _GrammarFirstChoice, llama_thread
from llm_coordinator.backends.scripted import ScriptedBackend
from llm_coordinator.config import LlamaBackendConfig, OpenAIBackendConfig, ScriptedBackendConfig, ScriptedReply
from llm_coordinator.context import build_goal_context, build_tuned_context, goal_options
from llm_coordinator.interface import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatMessage,
    LLMBackend,
    Request,
)
from llm_coordinator.planner import _choice_schema
from llm_coordinator.reading import reading_schema

ROOT = Path(__file__).resolve().parents[2]

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


def _reading_requests() -> list[tuple[LlamaBackendConfig, Request]]:
    """Readings of orders on both plants in the plan language, by the base model (the intent
    mode's goal question) and by the demo cell's tuned adapter (the whole reading)."""
    from plant import load_plant

    out: list[tuple[LlamaBackendConfig, Request]] = []
    orders = ["Machine two blanks, then home every robot", "If the check fails, scrap it", "Make me a coffee"]
    for path in ("plants/demo_cell.yaml", "plants/packaging_line.yaml"):
        plant = load_plant(ROOT / path)
        for order in orders:
            goal = build_goal_context(plant, order)
            ask = [ChatMessage("system", goal.system), ChatMessage("user", goal.user)]
            out.append(
                (
                    LlamaBackendConfig(),
                    Request(ask, _choice_schema("goal", list(goal_options(plant))), "goal", 40, 120.0),
                )
            )
            if path.endswith("demo_cell.yaml"):
                tuned = build_tuned_context(plant.name, order)
                ask = [ChatMessage("system", tuned.system), ChatMessage("user", tuned.user)]
                adapter = LlamaBackendConfig(adapter=ROOT / "models" / "demo_cell")
                out.append((adapter, Request(ask, reading_schema(plant), "reading", 160, 120.0)))
    return out


def test_greedy_decoding_checks_the_first_choice_and_writes_what_the_grammar_on_every_token_writes() -> None:
    """The default (the model's first choice checked against the grammar, the grammar applied to
    every candidate only when it breaks it) writes token for token what the grammar applied to
    every candidate of every token writes, on real readings of both plants, base and tuned."""
    corrected = 0
    for config, request in _reading_requests():
        every = LlamaBackend(config.model_copy(update={"grammar_every_token": True}))
        first = LlamaBackend(config)
        model = first._loaded()
        assert every._loaded() is model  # (one model in memory for both)
        # Each from an empty cache: a prompt evaluated on top of a cached prefix (one token
        # instead of all of them) gives logits a rounding apart, and a near tie may then go the
        # other way whatever the sampler.
        on = llama_thread()
        model.llm.reset()
        text, _, n = on.submit(first._generate, model, request, threading.Event()).result()
        model.llm.reset()
        again = on.submit(every._generate, model, request, threading.Event()).result()
        assert (text, n) == again[::2], request.messages[-1].content
        json.loads(text)
        grammar = first._grammar(model, request.schema)
        check = _GrammarFirstChoice(model, grammar)
        corrected += 1 if check._allows(model.llm.token_eos()) else 0  # (the empty answer: never)
        check.close()
    assert corrected == 0


def test_a_first_choice_that_breaks_the_grammar_is_replaced_by_the_best_it_allows(llama: LLMBackend) -> None:
    assert isinstance(llama, LlamaBackend)
    model = llama._loaded()
    llm = model.llm
    grammar = LlamaGrammar.from_string('root ::= "yes" | "no"', verbose=False)
    yes, no, maybe = (llm.tokenize(w.encode(), add_bos=False)[0] for w in ("yes", "no", "maybe"))
    scores = np.zeros(llm.n_vocab(), dtype=np.single)
    scores[maybe], scores[no], scores[yes] = 9.0, 7.0, 5.0
    check = _GrammarFirstChoice(model, grammar)
    try:
        only = check(None, scores.copy())
        assert int(np.argmax(only)) == no and only[no] == 7.0 and np.isneginf(np.delete(only, no)).all()
        assert check.corrected == 1
        # Accepted: the answer is complete, only the end may follow; "yes" no longer.
        assert not check._allows(yes) and check._allows(llm.token_eos())
    finally:
        check.close()
    check = _GrammarFirstChoice(model, grammar)
    try:
        scores[yes] = 10.0  # the first choice is allowed: taken as it is, nothing corrected
        assert int(np.argmax(check(None, scores.copy()))) == yes and check.corrected == 0
    finally:
        check.close()


def test_every_generation_runs_on_the_one_llama_cpp_thread(llama: LLMBackend) -> None:
    """Whichever thread and event loop ask (the console's, a planner's worker, a test's), the
    model runs on one thread of the process: llama.cpp keeps a spinning team of OpenMP threads
    for each thread that calls it, and two teams made every token three times as slow."""
    assert isinstance(llama, LlamaBackend)
    ran_on: list[str] = []
    generate = llama._generate

    def recorded(*args: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return generate(*args)

    llama._generate = recorded  # type: ignore[method-assign]
    try:
        asks = [
            threading.Thread(target=asyncio.run, args=(llama.complete(ASK, SCHEMA, max_tokens=20),)) for _ in range(2)
        ]
        for t in asks:
            t.start()
            t.join()
        asyncio.run(llama.complete(ASK, SCHEMA, max_tokens=20))
    finally:
        del llama._generate
    assert len(ran_on) == 3 and len(set(ran_on)) == 1 and ran_on[0].startswith("atelier-llama")

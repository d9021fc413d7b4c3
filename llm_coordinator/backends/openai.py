"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, a hosted model).

The schema is imposed the way the server supports best: ``response_format`` with
``{"type": "json_schema", "json_schema": {..., "strict": true}}`` (default), or a forced call
of a single tool whose parameters are the schema. The API key, if any, is read from the
environment variable the configuration names; it is never written in a config file or a log.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from llm_coordinator.config import OpenAIBackendConfig
from llm_coordinator.interface import BackendError, BackendUnavailable, Completion, LLMBackend, Request


class OpenAIBackend(LLMBackend):
    """A chat-completions client with constrained output (see the module docstring)."""

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self.config = config
        self.name = f"openai:{config.model}"
        headers = {"Content-Type": "application/json"}
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise BackendUnavailable(f"environment variable {config.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(base_url=config.base_url.rstrip("/") + "/", headers=headers)

    def _body(self, request: Request) -> dict[str, Any]:
        name, schema = request.schema_name, request.schema
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": request.chat(),
            "temperature": self.config.temperature,
            "max_tokens": request.max_tokens,
        }
        if self.config.structured_output == "response_format":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        else:
            body["tools"] = [
                {"type": "function", "function": {"name": name, "description": "answer", "parameters": schema}}
            ]
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        return body

    async def _answer(self, request: Request) -> Completion:
        """POST ``/chat/completions`` and return the constrained answer; raise on error."""
        timeout = httpx.Timeout(request.timeout_s, connect=min(self.config.connect_timeout_s, request.timeout_s))
        try:
            response = await self._client.post("chat/completions", json=self._body(request), timeout=timeout)
        except httpx.TimeoutException:
            raise TimeoutError from None  # a BackendTimeout, like the time budget running out
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise BackendError(f"{self.name}: HTTP {response.status_code}: {response.text[:300]}")
        try:
            data = response.json()
            choice = data["choices"][0]["message"]
            if self.config.structured_output == "tool_call":
                text = choice["tool_calls"][0]["function"]["arguments"]
            else:
                text = choice["content"]
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.name}: the response has no answer where expected ({exc!r})") from exc
        if not isinstance(text, str):
            text = json.dumps(text)
        return Completion(
            text=text,
            model=str(data.get("model") or self.config.model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool; safe to call twice."""
        await self._client.aclose()

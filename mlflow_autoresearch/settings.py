"""One typed settings object; environment variables use the prefix ``AUTORESEARCH_``.

The CLI builds it from flags; library code receives it.  Validation errors
name the field, like recipe errors do.
"""

from __future__ import annotations

import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlflow_autoresearch._errors import UsageError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking store: the flag, then ``MLFLOW_TRACKING_URI``, then ``./mlflow.db``.

    Always explicit: MLflow's own default can flip to the retired file store.
    A relative SQLite path is made absolute, so that child processes started
    in another folder (``mlflow run``) open the same database.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/") and ":memory:" not in uri:
        uri = prefix + os.path.abspath(uri[len(prefix):])
    return uri


class Settings(BaseSettings):
    """Everything the loop needs besides the recipe."""

    model_config = SettingsConfigDict(env_prefix="AUTORESEARCH_", extra="forbid", frozen=True)

    tracking_uri: str | None = None
    experiment: str | None = Field(default=None, description="experiment name; default: the recipe's name")
    profile: str | None = None
    trials: int = Field(default=20, ge=0, le=100_000)
    agent: str = Field(default="auto", pattern=r"^(offline|claude|auto|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
                       description="offline, claude, auto, or module:Factory of a plug-in backend")
    worker: str = Field(default="default", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    slots: int | None = Field(default=None, ge=1, le=64, description="evaluation slots; default one per GPU, else 1; "
                              "with a cluster backend (slurm, kubernetes) jobs at once, default 1")
    proposals_ahead: int = Field(default=1, ge=0, le=32, description="proposals in flight beyond the slots")
    wall_seconds: float | None = Field(default=None, gt=0)
    dollars: float | None = Field(default=None, gt=0, description="LLM spend budget in USD")
    seed: int = 0
    backend: str = Field(default="local", description="MLflow project backend for evaluations")
    backend_config: str | None = None
    project: str | None = Field(default=None, description="MLflow project with the `evaluate` entry point "
                                "[default: a generated local one]; for kubernetes e.g. docs/cluster")
    in_process: bool = Field(default=False, description="evaluate in this process instead of mlflow.projects.run")
    # The Claude backend (docs/claude.md)
    model: str = Field(default="claude-sonnet-5-5", min_length=1, description="Claude model id")
    fallback_model: str | None = Field(default=None, description="model a refused proposal starts over on")
    max_turns: int = Field(default=24, ge=1, le=200)
    max_tokens: int = Field(default=16_000, ge=256, le=128_000,
                            description="output tokens per model call, thinking included")
    thinking: str = Field(default="auto", pattern=r"^(auto|off|adaptive|[0-9]+)$",
                          description="auto (the model's default), off, adaptive, or a budget in tokens")
    effort: str | None = Field(default=None, pattern=r"^(low|medium|high|xhigh|max)$",
                               description="output effort [default: the model's]")
    cache_ttl: str = Field(default="5m", pattern=r"^(5m|1h)$", description="prompt-cache lifetime")
    provider: str = Field(default="auto", pattern=r"^(auto|anthropic|bedrock|vertex|foundry)$",
                          description="where Claude is served [default: by the credentials present]")
    anthropic_base_url: str | None = Field(default=None, description="an Anthropic-compatible server "
                                           "[default: $ANTHROPIC_BASE_URL]")
    connect_timeout: float = Field(default=10, gt=0, le=600, description="seconds to connect to the model API")
    request_timeout: float = Field(default=600, gt=0, description="seconds for one model API request")
    model_retry_seconds: float = Field(default=300, gt=0, description="retry a failing model API this long, then pause")
    prices: str | None = Field(default=None, description="JSON or file: {model: [usd per Mtok in, out]}")
    steering_file: str | None = None
    sweep_points: int = Field(default=0, ge=0, description="Optuna points after each kept trial with knobs")
    sweep_storage: str | None = Field(default=None, description="Optuna storage URL [default: optuna.db beside mlflow.db]")
    sweep_sampler: str = Field(default="tpe", pattern=r"^(tpe|random)$")
    lease_seconds: float = Field(default=120, ge=5)
    arm: str = Field(default="default", pattern=r"^(default|lineage-off|generalist|generic(:\d{1,3})?)$",
                     description="ablation arm: default, lineage-off, generalist or generic:N")
    lessons_every: int = Field(default=0, ge=0, description="an analyst writes a lessons note every K trials (0: never)")
    allow_failed_baseline: bool = Field(default=False, description="keep a baseline that does not pass (outcome not "
                                         "ok) and let specialists repair it, instead of stopping with its error")
    lessons_from: tuple[str, ...] = Field(default=(), description="experiments whose lessons and kept changes to import")


def make_settings(**values: object) -> Settings:
    """Settings from flags (None means: not given) over the environment."""
    try:
        return Settings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        lines = ["invalid settings"]
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            lines.append(f"  --{field.replace('_', '-')} (or AUTORESEARCH_{field.upper()}): {err['msg']}")
        raise UsageError("\n".join(lines)) from None

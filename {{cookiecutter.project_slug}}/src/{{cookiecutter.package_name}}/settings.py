"""Configuration, read once from environment variables (and .env when present)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal
{%- if cookiecutter.use_postgres %}
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
{%- endif %}

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["local", "test", "staging", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

{%- if cookiecutter.use_postgres %}
LIBPQ_ONLY_OPTIONS = frozenset({"channel_binding", "gssencmode", "target_session_attrs"})
{% endif %}
# Values that ship in .env.example; a real deployment must replace them.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "please-change"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    environment: Environment = "local"
    log_level: LogLevel = "INFO"
    secret_key: SecretStr = SecretStr("")
    # Comma-separated in the environment: CORS_ORIGINS=https://a.example,https://b.example
    cors_origins: Annotated[list[str], NoDecode] = []
{%- if cookiecutter.use_postgres %}
    # asyncpg DSN; providers' postgres:// and postgresql:// forms are normalised.
    # repr=False: the URL carries a password; keep it out of logs and tracebacks.
    database_url: str = Field(default="postgresql+asyncpg://app:app@localhost:5432/app", repr=False)
    database_pool_size: int = Field(default=5, ge=1)
    database_max_overflow: int = Field(default=5, ge=0)
    # How long a request may wait to connect or for a pooled connection.
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long one statement may run before asyncpg cancels it.
    database_command_timeout_seconds: float = Field(default=30.0, gt=0)
{%- endif %}
{%- if cookiecutter.use_redis %}
    redis_url: str = Field(default="redis://localhost:6379/0", repr=False)
    # How long one Redis command may take.
    redis_timeout_seconds: float = Field(default=5.0, gt=0)
{%- endif %}
    # How long one readiness check may take before it counts as failed.
    health_check_timeout_seconds: float = Field(default=1.0, gt=0)

    # Server settings, read by {% if cookiecutter.server == "gunicorn" %}gunicorn.conf.py{% else %}__main__.py{% endif %} before any worker starts.
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=2, ge=1)
    # Proxies whose X-Forwarded-* headers are trusted; "*" only behind a trusted load balancer.
    forwarded_allow_ips: str = "127.0.0.1"
    # Idle keep-alive connections are closed after this long. Behind a load
    # balancer, set it above the balancer's idle timeout (AWS ALB: 60 s).
    keepalive_seconds: int = Field(default=5, ge=1)
    # Log probe requests (/health/*{% if cookiecutter.use_metrics %}, /metrics{% endif %}) too; off, they would bury the traffic.
    access_log_probes: bool = False

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value
{%- if cookiecutter.use_postgres %}

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
            raise ValueError(
                "must be a PostgreSQL URL: postgresql+asyncpg://user:password@host:5432/db"
            )
        # Parsed with the standard library: importing SQLAlchemy here would slow
        # down the one-line refusal of a bad environment.
        url = urlsplit(f"postgresql+asyncpg://{rest}")
        try:
            host = url.hostname
            _ = url.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if not host:
            raise ValueError("has no host: postgresql+asyncpg://user:password@host:5432/db")
        # Providers hand out libpq options; asyncpg takes sslmode as "ssl" and
        # would refuse the libpq-only ones at every connection attempt.
        query = [(k, v) for k, v in parse_qsl(url.query) if k not in LIBPQ_ONLY_OPTIONS]
        query = [("ssl" if k == "sslmode" else k, v) for k, v in query]
        return urlunsplit(url._replace(query=urlencode(query)))
{%- endif %}
{%- if cookiecutter.use_redis %}

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a Redis URL: redis://host:6379/0")
        return value
{%- endif %}

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        # A forgotten SECRET_KEY is harmless on a laptop and a breach in production.
        if self.environment not in {"local", "test"} and (
            self.secret_key.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
        ):
            raise ValueError(
                f"SECRET_KEY is empty or a placeholder; set a random value when "
                f"ENVIRONMENT={self.environment}"
            )
        return self


class ConfigurationError(SystemExit):
    """Raised instead of a traceback when the environment is invalid."""


def describe(error: ValidationError) -> str:
    """One line per bad variable, named as it is spelled in the environment."""
    problems = []
    for detail in error.errors():
        name = "_".join(str(part) for part in detail["loc"][:1]).upper() or "SETTINGS"
        message = str(detail["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name != "SETTINGS" else message)
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(describe(error)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use (never at import time)."""
    return load_settings()

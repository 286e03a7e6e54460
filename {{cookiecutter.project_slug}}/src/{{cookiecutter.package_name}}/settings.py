"""Configuration, read once from environment variables (and .env when present)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal
{%- if cookiecutter.use_postgres %}
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
{%- elif cookiecutter.use_redis %}
from urllib.parse import unquote, urlsplit
{%- endif %}

from pydantic import (
    Field,
    ValidationError,
    field_validator,{% if cookiecutter.use_postgres or cookiecutter.use_redis %}
    model_validator,{% endif %}
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["local", "test", "staging", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

# Passwords that ship in .env.example or the defaults; outside local/test they are refused.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "please-change", "app"})
{%- endif %}
{%- if cookiecutter.use_postgres %}

# What the asyncpg driver takes as keyword arguments, straight from the URL's query.
ASYNCPG_QUERY_OPTIONS = frozenset({"host", "port", "target_session_attrs", "krbsrvname", "gsslib"})
# libpq options with a setting-free asyncpg equivalent: passed to the server at connect time.
SERVER_SETTING_OPTIONS = frozenset({"application_name"})
# libpq options that asyncpg cannot honour from a URL, with what to do instead. Refused at
# startup: accepted silently, each would fail every connection (or weaken TLS) later.
REFUSED_OPTIONS = {
    "connect_timeout": "set DATABASE_POOL_TIMEOUT_SECONDS instead",
    "sslrootcert": "set the PGSSLROOTCERT environment variable instead",
    "sslcert": "set the PGSSLCERT environment variable instead",
    "sslkey": "set the PGSSLKEY environment variable instead",
    "sslcrl": "set the PGSSLCRL environment variable instead",
    "sslpassword": "not supported by asyncpg",
    "service": "not supported by asyncpg; write the connection details into the URL",
    "passfile": "put the password into the URL (from a secret) instead",
}
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
TARGET_SESSION_ATTRS = frozenset(
    {"any", "primary", "standby", "read-write", "read-only", "prefer-standby"}
)
{%- endif %}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    environment: Environment = "local"
    log_level: LogLevel = "INFO"
    # Comma-separated in the environment: CORS_ORIGINS=https://a.example,https://b.example
    cors_origins: Annotated[list[str], NoDecode] = []
    # Larger request bodies are refused with 413 before the app reads them.
    max_request_body_bytes: int = Field(default=1_048_576, ge=1)
{%- if cookiecutter.use_postgres %}
    # asyncpg URL; postgres:// and postgresql:// and the libpq options that asyncpg can
    # honour are translated, the others refused by name (see split_database_url).
    # repr=False: the URL carries a password; keep it out of logs and tracebacks.
    database_url: str = Field(default="postgresql+asyncpg://app:app@localhost:5432/app", repr=False)
    # A fixed pool: SQLAlchemy closes an overflow connection as soon as it is returned
    # while the pool is full, so under steady load overflow means a new connection
    # (TCP, auth, server start-up) per request. Raise the size, not the overflow.
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=0, ge=0)
    # How long a request may wait to connect or for a pooled connection.
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long one statement may run before the server cancels it (a 500: a slow query is a
    # bug). A server that does not answer at all for a little longer counts as unavailable (503).
    database_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    # false behind PgBouncer in transaction mode, which cannot keep prepared statements.
    database_statement_cache: bool = True
    # Migrations wait at most this long for a table lock (then fail instead of queueing every
    # request behind them), and one migration statement may run at most this long.
    migration_lock_timeout_seconds: float = Field(default=10.0, gt=0)
    migration_statement_timeout_seconds: float = Field(default=900.0, gt=0)
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
    # Idle keep-alive connections are closed after this long. Behind a load balancer, set it
    # above the balancer's idle timeout (AWS ALB: 60 s).
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
    def _check_database_url(cls, value: str) -> str:
        split_database_url(value)  # refuses what asyncpg could not take, naming it
        return value

    @property
    def database_sqlalchemy_url(self) -> str:
        """DATABASE_URL in the form SQLAlchemy's asyncpg dialect takes."""
        return split_database_url(self.database_url)[0]

    @property
    def database_server_settings(self) -> dict[str, str]:
        """Server settings from DATABASE_URL: application_name, and options=-c name=value."""
        return split_database_url(self.database_url)[1]
{%- endif %}
{%- if cookiecutter.use_redis %}

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a Redis URL: redis://host:6379/0")
        return value
{%- endif %}

{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

    @model_validator(mode="after")
    def _refuse_placeholder_passwords(self) -> Settings:
        # A password from .env.example is harmless on a laptop and a breach anywhere else.
        if self.environment in {"local", "test"}:
            return self
        passwords: dict[str, str | None] = {}
{%- if cookiecutter.use_postgres %}
        passwords["DATABASE_URL"] = urlsplit(self.database_url).password
{%- endif %}
{%- if cookiecutter.use_redis %}
        passwords["REDIS_URL"] = urlsplit(self.redis_url).password
{%- endif %}
        for name, password in passwords.items():
            if password is not None and unquote(password).strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"{name} has a placeholder password; set a random one when "
                    f"ENVIRONMENT={self.environment}"
                )
        return self
{%- endif %}
{%- if cookiecutter.use_postgres %}


def split_database_url(value: str) -> tuple[str, dict[str, str]]:
    """The URL as SQLAlchemy's asyncpg dialect takes it, and the server settings it implies.

    Parsed with the standard library: importing SQLAlchemy here would slow down the
    one-line refusal of a bad environment. Every libpq query option is mapped or refused
    by name, because SQLAlchemy hands the query to ``asyncpg.connect()`` as keyword
    arguments and an unknown one fails every connection, long after startup.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError(
            "must be a PostgreSQL URL: postgresql+asyncpg://user:password@host:5432/db"
        )
    url = urlsplit(f"postgresql+asyncpg://{rest}")
    query: list[tuple[str, str]] = []
    server_settings: dict[str, str] = {}
    hosts = url.netloc.rpartition("@")[2]
    if "," in hosts:
        # libpq's multi-host form; SQLAlchemy's asyncpg dialect wants ?host=h1:p1&host=h2:p2.
        query += [("host", host) for host in hosts.split(",") if host]
        url = url._replace(netloc=url.netloc.rpartition("@")[0] + "@" if "@" in url.netloc else "")
    else:
        try:
            _ = url.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("is not a valid URL") from None
    for key, option in parse_qsl(url.query, keep_blank_values=True):
        if key in ASYNCPG_QUERY_OPTIONS:
            if key == "target_session_attrs" and option not in TARGET_SESSION_ATTRS:
                allowed = sorted(TARGET_SESSION_ATTRS)
                raise ValueError(f"target_session_attrs={option} is not one of {allowed}")
            query.append((key, option))
        elif key in {"sslmode", "ssl"}:
            if option not in SSL_MODES:
                raise ValueError(f"{key}={option} is not one of {sorted(SSL_MODES)}")
            query.append(("ssl", option))
        elif key in SERVER_SETTING_OPTIONS:
            server_settings[key] = option
        elif key == "options":
            server_settings |= _parse_options(option)
        elif key in {"channel_binding", "gssencmode"}:
            # libpq's "prefer" is best effort, which asyncpg's behaviour already is;
            # "require" is a promise asyncpg cannot keep, so it is refused, not dropped.
            if option == "require":
                raise ValueError(f"{key}=require is not supported by asyncpg")
        elif key in REFUSED_OPTIONS:
            raise ValueError(f"{key} is not supported in the URL: {REFUSED_OPTIONS[key]}")
        else:
            raise ValueError(f"unknown connection option {key!r}")
    if not url.hostname and not any(key == "host" for key, _ in query):
        raise ValueError("has no host: postgresql+asyncpg://user:password@host:5432/db")
    return urlunsplit(url._replace(query=urlencode(query))), server_settings


def _parse_options(options: str) -> dict[str, str]:
    """libpq's ``options=-c name=value -c ...`` as server settings."""
    words = options.replace("-c ", "-c").split()
    settings: dict[str, str] = {}
    for word in words:
        name, sep, value = word.removeprefix("-c").partition("=")
        if not word.startswith("-c") or not sep or not name:
            raise ValueError(f"options={options!r}: only '-c name=value' settings are supported")
        settings[name] = value
    return settings
{%- endif %}


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

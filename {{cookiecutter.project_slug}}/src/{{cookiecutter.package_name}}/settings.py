"""Configuration, read once from environment variables (and .env when present)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}
from urllib.parse import unquote, urlsplit
{%- elif cookiecutter.auth == "oidc" %}
from urllib.parse import urlsplit
{%- endif %}

{% if cookiecutter.use_rate_limit -%}
from limits import parse_many
{% endif -%}
from pydantic import (
    Field,
    ValidationError,{% if cookiecutter.auth == "oidc" or cookiecutter.use_postgres %}
    ValidationInfo,{% endif %}
    field_validator,{% if cookiecutter.use_postgres or cookiecutter.use_redis or cookiecutter.auth == "oidc" %}
    model_validator,{% endif %}
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
{%- if cookiecutter.use_postgres %}

from {{ cookiecutter.package_name }}.database_url import asyncpg_dsn
{%- endif %}

Environment = Literal["local", "test", "staging", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

# Passwords that ship in .env.example or the defaults; outside local/test they are refused.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "please-change", "app"})
{%- endif %}
{%- if cookiecutter.auth == "oidc" %}

# The signature algorithms a token may use: asymmetric only. "none" and the HMAC family
# (HS256...) are never accepted: with HMAC, the issuer's public key would be the secret.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
    | {"Ed25519"}  # EdDSA's new name (RFC 9864)
)
{%- endif %}


# The share of GRACEFUL_TIMEOUT_SECONDS that in-flight requests get after SIGTERM; the
# rest is the lifespan's shutdown (closing pools, writing the last log lines and spans).
REQUEST_SHARE_OF_GRACE = 0.8


def request_grace(graceful_timeout_seconds: int) -> int:
    """Whole seconds in-flight requests may still run after SIGTERM."""
    return max(1, int(graceful_timeout_seconds * REQUEST_SHARE_OF_GRACE))


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
    # A libpq URL (postgres://, postgresql:// or postgresql+asyncpg://), which asyncpg
    # parses itself; options it would mishandle are refused by name (database_url.py).
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
    # Shorter than the requests' grace at shutdown (see graceful_timeout_seconds).
    database_statement_timeout_seconds: float = Field(default=15.0, gt=0)
    # false behind PgBouncer in transaction mode, which cannot keep prepared statements.
    database_statement_cache: bool = True
    # Migrations wait at most this long for a table lock (then fail instead of queueing every
    # request behind them), and one migration statement may run at most this long.
    migration_lock_timeout_seconds: float = Field(default=10.0, gt=0)
    migration_statement_timeout_seconds: float = Field(default=900.0, gt=0)
    # The migrate job may start together with the database: it waits this long for the
    # database to accept connections (db.connect_when_up) before it fails.
    migration_connect_timeout_seconds: float = Field(default=60.0, gt=0)
    # Migrations connect with this URL when it is set, DATABASE_URL otherwise: directly or
    # through a pooler in session mode (their lock belongs to one session), as the role
    # that owns the schema. DATABASE_URL may then go through PgBouncer in transaction
    # mode, as a role that owns nothing.
    migration_database_url: str = Field(default="", repr=False)
{%- endif %}
{%- if cookiecutter.use_redis %}
    redis_url: str = Field(default="redis://localhost:6379/0", repr=False)
    # How long one Redis command may take.
    redis_timeout_seconds: float = Field(default=5.0, gt=0)
{%- if cookiecutter.use_rate_limit %}
    # Each caller's requests per route (rate_limit.py): "<count>/<second|minute|hour|day>",
    # or "<count> per <n> <unit>"; a route may name its own with rate_limit.limit().
    rate_limit_default: str = "100/minute"
{%- endif %}
{%- endif %}
{%- if cookiecutter.use_worker %}
    # Jobs one worker process runs at once (scale out with more worker processes).
    worker_concurrency: int = Field(default=10, ge=1)
    # A failing job runs at most this many times, then goes to the dead letters.
    worker_max_attempts: int = Field(default=5, ge=1)
    # The wait before a retry: this many seconds times the attempts so far (plus up to a
    # second of jitter), at most worker_retry_max_delay_seconds.
    worker_retry_delay_seconds: float = Field(default=2.0, ge=0)
    worker_retry_max_delay_seconds: float = Field(default=60.0, ge=0)
    # A job taken by a worker and not acknowledged for this long (its worker died) is
    # handed to another one: longer than the longest job, or it would run twice at once.
    worker_redelivery_seconds: float = Field(default=600.0, gt=0)
{%- if cookiecutter.use_metrics %}
    # Where a worker serves its /metrics (it runs no web server); 0: any free port.
    worker_metrics_port: int = Field(default=9000, ge=0, le=65535)
{%- endif %}
{%- endif %}
{%- if cookiecutter.auth == "oidc" %}
    # The OpenID Connect issuer whose access tokens this service accepts: the "iss" every
    # token must carry, and where discovery finds its keys. No default: a service names
    # the issuer it trusts.
    auth_issuer_url: str
    # The issuer's JWKS, when discovery is not to be used; empty: found by discovery.
    auth_jwks_url: str = ""
    # The "aud" every token must carry: this service's name at the issuer.
    auth_audience: str = Field(min_length=1)
    # Comma-separated in the environment, like CORS_ORIGINS; asymmetric only (see above).
    auth_algorithms: Annotated[list[str], NoDecode] = ["RS256", "PS256", "ES256", "EdDSA"]
    # Clock skew allowed on exp and nbf, in seconds.
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Claims a token must carry besides iss, aud, exp and sub (always required).
    auth_required_claims: Annotated[list[str], NoDecode] = []
    # An unknown kid fetches the keys again at most this often; they are fetched again
    # anyway once older than the max age (a key the issuer withdrew stops working).
    auth_jwks_min_refresh_seconds: float = Field(default=60.0, gt=0)
    auth_jwks_max_age_seconds: float = Field(default=3600.0, gt=0)
    # How long fetching discovery or keys may take (a request may be waiting on it).
    auth_issuer_timeout_seconds: float = Field(default=3.0, gt=0)
    # Longer tokens are refused before they are parsed.
    auth_max_token_bytes: int = Field(default=8192, ge=512)
{%- endif %}
    # How long one dependency check (/health/dependencies) may take before it counts as failed.
    health_check_timeout_seconds: float = Field(default=1.0, gt=0)

    # Server settings, read by {% if cookiecutter.server == "gunicorn" %}gunicorn.conf.py{% else %}__main__.py{% endif %} before any worker starts.
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=2, ge=1)
    # Proxies whose X-Forwarded-* headers are trusted; "*" only behind a trusted load balancer.
    forwarded_allow_ips: str = "127.0.0.1"
    # Idle keep-alive connections are closed after this long. Behind a load balancer, set it
    # above the balancer's idle timeout (AWS ALB: 60 s).
    keepalive_seconds: int = Field(default=5, ge=1)
    # After SIGTERM: in-flight requests get the first four fifths of this (then the
    # server cancels what is left), the lifespan's shutdown the rest. compose.yaml's
    # stop_grace_period and the pod's terminationGracePeriodSeconds are longer.
    graceful_timeout_seconds: int = Field(default=25, ge=1)  # whole seconds, as the servers take it
    # Log probe requests (/health/*{% if cookiecutter.use_metrics %}, /metrics{% endif %}) too; off, they would bury the traffic.
    access_log_probes: bool = False

    @property
    def request_grace_seconds(self) -> int:
        return request_grace(self.graceful_timeout_seconds)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins"{% if cookiecutter.auth == "oidc" %}, "auth_algorithms", "auth_required_claims"{% endif %}, mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
{%- if cookiecutter.auth == "oidc" %}

    @field_validator("auth_algorithms")
    @classmethod
    def _only_asymmetric(cls, value: list[str]) -> list[str]:
        refused = [name for name in value if name not in ASYMMETRIC_ALGORITHMS]
        if refused or not value:
            accepted = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            raise ValueError(f"{', '.join(refused) or 'none'} not accepted; choose from {accepted}")
        return value

    @field_validator("auth_issuer_url", "auth_jwks_url")
    @classmethod
    def _check_issuer_url(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(value)
        if (value or info.field_name == "auth_issuer_url") and (
            parts.scheme not in {"http", "https"} or not parts.hostname
        ):
            raise ValueError("must be an http(s) URL: https://login.example.com/realms/main")
        return value

    @model_validator(mode="after")
    def _issuer_over_https(self) -> Settings:
        # Keys fetched over plain HTTP can be swapped by anyone on the path: fine for the
        # dev issuer in compose, never for a deployed service.
        if self.environment in {"local", "test"}:
            return self
        urls = {"AUTH_ISSUER_URL": self.auth_issuer_url, "AUTH_JWKS_URL": self.auth_jwks_url}
        for name, url in urls.items():
            if url and urlsplit(url).scheme != "https":
                raise ValueError(f"{name} must be https when ENVIRONMENT={self.environment}")
        return self

    @model_validator(mode="after")
    def _no_placeholder_issuer(self) -> Settings:
        # The Kubernetes base ships https://issuer.example.com until a team names its
        # own: deployed with it, every token would be refused while the pods look ready.
        if self.environment in {"local", "test"}:
            return self
        host = urlsplit(self.auth_issuer_url).hostname or ""
        reserved = ("example.com", "example.net", "example.org")  # RFC 2606
        if host.rsplit(".", 1)[-1] in {"example", "invalid"} or any(
            host == name or host.endswith(f".{name}") for name in reserved
        ):
            raise ValueError(
                f"AUTH_ISSUER_URL names a placeholder host ({host}); set your issuer's "
                f"when ENVIRONMENT={self.environment}"
            )
        return self
{%- endif %}
{%- if cookiecutter.use_postgres %}

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _check_database_url(cls, value: str, info: ValidationInfo) -> str:
        # MIGRATION_DATABASE_URL may be empty (then migrations use DATABASE_URL).
        if value or info.field_name == "database_url":
            asyncpg_dsn(value)  # refuses what asyncpg would mishandle, naming it
        return value

    @property
    def database_dsn(self) -> str:
        """DATABASE_URL as the DSN asyncpg parses (db.create_engine)."""
        return asyncpg_dsn(self.database_url)

    @property
    def migration_dsn(self) -> str:
        """The DSN migrations connect with: MIGRATION_DATABASE_URL, else DATABASE_URL."""
        return asyncpg_dsn(self.migration_database_url or self.database_url)
{%- endif %}
{%- if cookiecutter.use_redis %}

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a Redis URL: redis://host:6379/0")
        return value
{%- if cookiecutter.use_rate_limit %}

    @field_validator("rate_limit_default")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        # One rate: the limits library would otherwise take the first of "1/second;5/minute".
        try:
            rates = parse_many(value)
        except ValueError:
            rates = []
        if len(rates) != 1:
            raise ValueError("must be one rate such as 100/minute or 10 per 30 seconds")
        return value
{%- endif %}
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
        if self.migration_database_url:
            passwords["MIGRATION_DATABASE_URL"] = urlsplit(self.migration_database_url).password
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

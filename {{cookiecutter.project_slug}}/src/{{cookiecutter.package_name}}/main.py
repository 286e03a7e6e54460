"""The application factory and its lifespan{% if cookiecutter.use_postgres or cookiecutter.use_redis %}, which owns every connection pool{% endif %}."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}
from functools import partial
{%- endif %}
from importlib.metadata import metadata

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
{%- if cookiecutter.use_tracing %}
{%- if cookiecutter.use_redis %}
from opentelemetry.instrumentation.redis import RedisInstrumentor
{%- endif %}
{%- if cookiecutter.use_postgres %}
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
{%- endif %}
from opentelemetry.sdk.trace import TracerProvider
{%- endif %}
{%- if cookiecutter.use_postgres %}
from sqlalchemy.ext.asyncio import async_sessionmaker
{%- endif %}

from {{ cookiecutter.package_name }} import (
{%- if cookiecutter.auth == "oidc" %}
    auth,
{%- endif %}
{%- if cookiecutter.use_redis %}
    cache,
{%- endif %}
{%- if cookiecutter.use_postgres %}
    db,
{%- endif %}
    health,
{%- if cookiecutter.use_metrics %}
    metrics,
{%- endif %}
{%- if cookiecutter.use_metrics and cookiecutter.auth == "oidc" %}
    metrics_auth,
{%- endif %}
{%- if cookiecutter.use_metrics and cookiecutter.use_postgres %}
    metrics_db,
{%- endif %}
{%- if cookiecutter.use_metrics and cookiecutter.use_rate_limit %}
    metrics_rate_limit,
{%- endif %}
{%- if cookiecutter.use_rate_limit %}
    rate_limit,
{%- endif %}
{%- if cookiecutter.use_rate_limit and cookiecutter.auth == "oidc" %}
    rate_limit_auth,
{%- endif %}
{%- if cookiecutter.use_tracing %}
    tracing,
{%- endif %}
{%- if cookiecutter.use_worker %}
    worker,
{%- endif %}
)
from {{ cookiecutter.package_name }}.access_log import install_access_log
from {{ cookiecutter.package_name }}.api import api_router
from {{ cookiecutter.package_name }}.body_limit import BodySizeLimitMiddleware
from {{ cookiecutter.package_name }}.errors import Dependency, install_error_handling
from {{ cookiecutter.package_name }}.logging_config import configure_logging
from {{ cookiecutter.package_name }}.request_id import RequestIdMiddleware
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the clients when a worker starts and close them when it stops.
{%- if not (cookiecutter.use_postgres or cookiecutter.use_redis) %}"""{% endif %}
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

    Nothing connects here: pools connect lazily, so a worker starts even while
    a dependency is down: requests that need it get a 503 and
    /health/dependencies names it, instead of a crash loop.
    Each close is registered as soon as its client exists, so a failure half
    way through still closes what was opened.
{%- if cookiecutter.auth == "oidc" %}
    The one request made here is for the issuer's keys, bounded by
    AUTH_ISSUER_TIMEOUT_SECONDS; without them the worker starts all the same.
{%- endif %}
    """
{%- endif %}
    settings: Settings = app.state.settings
    # Filled below, one probe per client, for /health/dependencies (health.py).
    app.state.dependency_probes = {}
    async with AsyncExitStack() as resources:
{%- if cookiecutter.use_tracing %}
        tracer_provider: TracerProvider | None = app.state.tracer_provider
        if tracer_provider is not None:
            # Registered first, so it runs last: spans of the shutdown are exported too.
            resources.callback(tracer_provider.shutdown)
            # Outgoing requests' spans; each client below is instrumented as it opens.
            resources.enter_context(tracing.instrumented_httpx(tracer_provider))
{%- endif %}
{%- if cookiecutter.use_postgres %}
        engine = db.create_engine(settings)
        resources.push_async_callback(engine.dispose)
        app.state.engine = engine
        app.state.autocommit_engine = db.autocommit(engine)
        app.state.connection_turns = db.ConnectionTurns(settings)
        app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        # The dependency check gets a connection of its own: it never queues behind
        # requests, so a saturated pool reads as busy, not as a database down.
        health_engine = db.create_engine(settings, pool_size=1, max_overflow=0)
        resources.push_async_callback(health_engine.dispose)
        app.state.dependency_probes["database"] = partial(db.ping, health_engine)
{%- if cookiecutter.use_metrics %}
        metrics_db.observe_pool(engine)
{%- endif %}
{%- if cookiecutter.use_tracing %}
        if tracer_provider is not None:
            # Its declared range lags SQLAlchemy releases (it refuses 2.1 although the
            # event API it uses is unchanged); tests/test_tracing.py proves the SQL span.
            resources.enter_context(
                tracing.instrumented(
                    tracer_provider,
                    SQLAlchemyInstrumentor(),
                    engines=[engine.sync_engine, health_engine.sync_engine],
                    skip_dep_check=True,
                )
            )
{%- endif %}
{%- endif %}
{%- if cookiecutter.use_redis %}
        redis = cache.create_redis(settings)
        resources.push_async_callback(redis.aclose)
        app.state.redis = redis
        app.state.dependency_probes["redis"] = partial(cache.ping, redis)
{%- if cookiecutter.use_worker %}
        # Only enqueues: the jobs run in the worker process (worker.py).
        app.state.broker = worker.create_broker(settings)
        resources.push_async_callback(app.state.broker.shutdown)
{%- endif %}
{%- if cookiecutter.use_rate_limit %}
        app.state.rate_limiter = rate_limit.RateLimiter(
            redis,
            settings.rate_limit_default,
{%- if cookiecutter.use_metrics %}
            on_decision=metrics_rate_limit.count_decision,
{%- endif %}
        )
{%- endif %}
{%- if cookiecutter.use_tracing %}
        if tracer_provider is not None:
            resources.enter_context(tracing.instrumented(tracer_provider, RedisInstrumentor()))
{%- endif %}
{%- endif %}
{%- if cookiecutter.auth == "oidc" %}
        issuer_http = auth.create_http_client(settings)
        resources.push_async_callback(issuer_http.aclose)
        app.state.verifier = await auth.start(
            settings,
            issuer_http,
{%- if cookiecutter.use_metrics %}
            on_reject=metrics_auth.count_rejection,
{%- endif %}
{%- if cookiecutter.use_tracing %}
            # The caller on the request's span (a no-op while tracing is off).
            on_accept=tracing.record_caller,
{%- endif %}
        )
        app.state.dependency_probes["issuer"] = app.state.verifier.keys.check
{%- endif %}
        # Registered last, so it runs first: no dependency check outlives the pools.
        resources.push_async_callback(health.cancel_dependency_check, app.state)
        freeze_startup_objects(resources)
        logger.info("started", extra={"environment": settings.environment})
        yield
        logger.info("stopping")


def freeze_startup_objects(resources: AsyncExitStack) -> None:
    """Keep what the worker built at start (modules, app, clients) out of the collector.

    They live as long as the worker, yet every full collection walked all of them again:
    under load a worker of the default service ran one every two seconds or so, a pause
    of about 55 ms that stalled every request in flight (the benchmark's p99). Frozen,
    a full collection walks only what requests created: about 2 ms. Garbage is collected
    first, so none is frozen; a reference cycle among the frozen objects that becomes
    garbage later stays until the worker exits, which only startup objects can be.
    Everything is unfrozen when the lifespan ends (tests start many apps in one process).
    """
    gc.collect()
    gc.freeze()
    resources.callback(gc.unfreeze)


def operation_id(route: APIRoute) -> str:
    """The function name: short, stable ids for generated clients and OpenAPI links."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    # Name, summary and version have one home: pyproject.toml.
    distribution = metadata("{{ cookiecutter.project_slug }}")
    app = FastAPI(
        title={{ cookiecutter.project_name | jsonify }},
        summary=distribution["Summary"],
        version=distribution["Version"],
        lifespan=lifespan,
        # The interactive docs and the schema are for developers, not the internet.
        docs_url=None if settings.environment == "production" else "/docs",
        openapi_url=None if settings.environment == "production" else "/openapi.json",
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    # Middleware, innermost first: each add_middleware wraps everything added before it.
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_request_body_bytes)
    dependencies: list[Dependency] = []
{%- if cookiecutter.use_postgres %}
    dependencies.append(db.FAILURES)
{%- endif %}
{%- if cookiecutter.use_redis %}
    dependencies.append(cache.FAILURES)
{%- endif %}
{%- if cookiecutter.use_worker %}
    dependencies.append(worker.FAILURES)
{%- endif %}
{%- if cookiecutter.auth == "oidc" %}
    dependencies.append(auth.ISSUER)
    auth.document_security(app, settings)
{%- endif %}
{%- if cookiecutter.use_metrics %}
    install_error_handling(app, dependencies, on_unavailable=metrics.count_dependency_failure)
{%- else %}
    install_error_handling(app, dependencies)
{%- endif %}
    # Outside the error handling and inside the request id: they see the response the
    # client gets (the problem a failure became) and log it with the request's id.
    # Polled every few seconds by machines: in the access log only with ACCESS_LOG_PROBES.
    probe_paths = [health.PREFIX]
{%- if cookiecutter.use_metrics %}
    metrics.install_metrics(app)
    probe_paths.append(metrics.PATH)
{%- endif %}
    install_access_log(app, probe_paths=probe_paths, log_probes=settings.access_log_probes)
{%- if cookiecutter.use_rate_limit %}
    # Every route included below is limited (the probes' paths excepted); its fields are
    # added outside the error handling, so a problem answer carries them too.
    rate_limit.install(app, exempt=probe_paths{% if cookiecutter.auth == "oidc" %}, subject=rate_limit_auth.subject{% endif %})
{%- endif %}
    if settings.cors_origins:
        # Outside the rest, so every response, the error responses built inside
        # included, carries the CORS headers a browser needs to let the page read it.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # Lets browser code read the id to quote in a bug report.
            expose_headers=["X-Request-ID"{% if cookiecutter.use_rate_limit %}, "RateLimit", "RateLimit-Policy", "Retry-After"{% endif %}],
        )
    # Outermost: the preflight answers CORS gives by itself carry an id too.
    app.add_middleware(RequestIdMiddleware)
{%- if cookiecutter.use_tracing %}
    # In this worker, after any fork: see tracing.py.
    app.state.tracer_provider = tracing.create_tracer_provider()
    if app.state.tracer_provider is not None:
        tracing.instrument_app(app, app.state.tracer_provider)
{%- endif %}
    app.include_router(health.router)
    app.include_router(api_router)
    return app

"""REDIS_URL parsing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import Settings


@pytest.mark.parametrize(
    "given", ["redis://h:6379/0", "rediss://:pw@h:6380/1", "unix:///run/redis.sock"]
)
def test_redis_urls_are_accepted(given: str) -> None:
    assert Settings(_env_file=None, redis_url=given).redis_url == given


@pytest.mark.parametrize("given", ["http://h:6379", "h:6379", ""])
def test_a_non_redis_url_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="must be a Redis URL"):
        Settings(_env_file=None, redis_url=given)


def test_the_redis_password_stays_out_of_the_repr() -> None:
    settings = Settings(_env_file=None, redis_url="redis://:redis-password@h:6379/0")
    assert "redis-password" not in repr(settings)


def test_outside_local_a_placeholder_redis_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="REDIS_URL has a placeholder password"):
        Settings(
            _env_file=None,
            environment="production",
            redis_url="redis://:change-me@redis:6379/0",
{%- if cookiecutter.use_postgres %}
            database_url="postgresql://app:Xk2v9@db/app",
            # Not the test session's (tests/plugins/db.py sets it in the environment).
            migration_database_url="",
{%- endif %}
        )

"""The app factory's lifespan, beyond the clients each option's tests cover."""

from __future__ import annotations

import gc

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings


def seen_by_the_collector(thing: object) -> bool:
    return any(tracked is thing for tracked in gc.get_objects())


async def test_what_the_worker_built_at_start_is_frozen_while_it_serves(
    settings: Settings,
) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # The app was built before its lifespan began: frozen with the clients.
        assert not seen_by_the_collector(app)
        serving = gc.get_freeze_count()
    assert gc.get_freeze_count() < serving
    assert seen_by_the_collector(app), "the lifespan left its objects frozen"

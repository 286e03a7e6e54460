"""``python -m {{ cookiecutter.package_name }}``: validate the environment, then serve.

The container's CMD. The settings are checked before the server is even
imported, so a bad variable stops the process once with one line naming it,
instead of a traceback or workers that crash and respawn forever. How the
chosen server starts is in its own module.
"""

from __future__ import annotations

from {{ cookiecutter.package_name }}.{{ cookiecutter.server }}_server import main

__all__ = ["main"]

if __name__ == "__main__":
    main()

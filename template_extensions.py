"""Jinja extensions the template loads through ``_extensions`` in cookiecutter.json.

Cookiecutter puts the template's root directory on ``sys.path`` while it
renders (and cruft does the same for ``cruft create`` and ``cruft update``), so
this module is importable by name there. It lives outside the generated project
and never ships with a service.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment
from jinja2.ext import Extension


def jsonify(obj: Any, indent: int | None = 4) -> str:
    """JSON text with non-ASCII characters kept as they are.

    Cookiecutter's own ``jsonify`` escapes everything outside ASCII, and a
    character outside the Basic Multilingual Plane (an emoji) becomes a
    surrogate pair such as ``\\ud83d\\ude80``. TOML refuses surrogate escapes, so
    ``pyproject.toml`` would not parse, and Python turns them into two lone
    surrogates that cannot be encoded as UTF-8, so ``/openapi.json`` would
    answer 500. Unescaped UTF-8 is valid in JSON, in a TOML basic string and in
    a Python string literal alike, so one filter serves all three.
    """
    return json.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=False)


class UnicodeJsonifyExtension(Extension):
    """Replace cookiecutter's ``jsonify`` filter with :func:`jsonify` above.

    Cookiecutter loads the extensions named in ``_extensions`` after its
    defaults, so this registration wins; the templates keep writing
    ``| jsonify``.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["jsonify"] = jsonify

"""The template's own Jinja filter keeps every character, emoji included."""

from __future__ import annotations

import ast
import json
import tomllib

import pytest

from template_extensions import jsonify

ANSWERS = ["Rocket 🚀 API", 'Zoë "Z" O\'Brien \\ co', "Ünïcode ✓", "tab\there"]


@pytest.mark.parametrize("value", ANSWERS)
def test_jsonify_is_a_valid_toml_string(value: str) -> None:
    assert tomllib.loads(f"key = {jsonify(value)}")["key"] == value


@pytest.mark.parametrize("value", ANSWERS)
def test_jsonify_is_a_python_literal_that_encodes_as_utf8(value: str) -> None:
    parsed = ast.literal_eval(jsonify(value))
    assert parsed == value
    assert parsed.encode("utf-8").decode("utf-8") == value


def test_jsonify_of_a_mapping_still_loads_as_json() -> None:
    context = {"project_name": "Rocket 🚀", "use_redis": True}
    assert json.loads(jsonify(context)) == context

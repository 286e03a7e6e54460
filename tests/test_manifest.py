"""The prune manifest and the template tree agree."""

from __future__ import annotations

import pytest

from hooks.post_gen_project import MANIFEST
from hooks.pre_gen_project import CHOICES
from tests.helpers import COOKIECUTTER_JSON, TEMPLATE_PROJECT

PACKAGE_DIR = "{{cookiecutter.package_name}}"


@pytest.mark.parametrize("path", sorted({p for paths in MANIFEST.values() for p in paths}), ids=str)
def test_every_manifest_path_exists_in_the_template(path: str) -> None:
    assert (TEMPLATE_PROJECT / path.format(package=PACKAGE_DIR)).exists()


def test_every_manifest_key_is_a_real_option_value() -> None:
    for option, value in MANIFEST:
        choices = COOKIECUTTER_JSON[option]
        assert value in (choices if isinstance(choices, list) else [True, False]), option


def test_hook_choices_match_cookiecutter_json() -> None:
    for option, allowed in CHOICES.items():
        assert sorted(allowed) == sorted(COOKIECUTTER_JSON[option]), option

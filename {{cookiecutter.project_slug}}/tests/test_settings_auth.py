from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import ConfigurationError, Settings, load_settings


@pytest.fixture(autouse=True)
def no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """load_settings() reads .env from the working directory: here, there is none."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("value", ["HS256", "RS256,HS512", "none", ","])
def test_only_asymmetric_algorithms_are_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AUTH_ALGORITHMS", value)
    with pytest.raises(ConfigurationError, match=r"AUTH_ALGORITHMS: .*not accepted"):
        load_settings()


def test_algorithms_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ALGORITHMS", "ES256, EdDSA")
    assert Settings(_env_file=None).auth_algorithms == ["ES256", "EdDSA"]


@pytest.mark.parametrize("variable", ["AUTH_ISSUER_URL", "AUTH_AUDIENCE"])
def test_the_issuer_and_audience_have_no_default(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigurationError, match=f"{variable}: Field required"):
        load_settings()


@pytest.mark.parametrize("variable", ["AUTH_ISSUER_URL", "AUTH_JWKS_URL"])
def test_a_url_that_is_not_http_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "issuer.example.com")
    with pytest.raises(ConfigurationError, match=f"{variable}: must be an http"):
        load_settings()


@pytest.mark.parametrize("variable", ["AUTH_ISSUER_URL", "AUTH_JWKS_URL"])
def test_outside_local_the_issuer_is_reached_over_https(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "http://issuer.example.com")
    assert Settings(_env_file=None, environment="local")
    with pytest.raises(ValidationError, match=f"{variable} must be https"):
        Settings(_env_file=None, environment="staging")


@pytest.mark.parametrize("host", ["issuer.example.com", "example.org", "login.issuer.invalid"])
def test_outside_local_a_placeholder_issuer_is_refused(host: str) -> None:
    """The Kubernetes base's https://issuer.example.com must not reach production."""
    url = f"https://{host}"
    assert Settings(_env_file=None, environment="local", auth_issuer_url=url)
    with pytest.raises(ValidationError, match=r"AUTH_ISSUER_URL names a placeholder host"):
        Settings(_env_file=None, environment="staging", auth_issuer_url=url)


def test_a_name_that_merely_contains_example_is_no_placeholder() -> None:
    url = "https://login.examples.com/realms/main"  # not the reserved example.com
    try:
        Settings(_env_file=None, environment="staging", auth_issuer_url=url)
    except ValidationError as error:  # other staging rules may apply here; not this one
        assert "placeholder host" not in str(error)

"""DATABASE_URL as SQLAlchemy's asyncpg dialect takes it, and the server settings it implies.

libpq's URL options are mapped to asyncpg's or refused by name when the settings
load (settings.py), instead of failing every connection long after startup.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    mapped = urlunsplit(url._replace(query=urlencode(query)))
    if not url.netloc:
        # Several hosts and no user: urlunsplit drops the "//" of an empty netloc for a
        # scheme it does not know, and SQLAlchemy cannot parse "postgresql+asyncpg:/db".
        mapped = mapped.replace(":", "://", 1)
    return mapped, server_settings


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

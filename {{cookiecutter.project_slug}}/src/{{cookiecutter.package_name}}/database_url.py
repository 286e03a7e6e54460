"""DATABASE_URL: a libpq URL, parsed by asyncpg itself, checked when the settings load.

asyncpg parses libpq URLs (several hosts, sslmode and the certificate files, passfile,
pg_service.conf, target_session_attrs), so the engine hands it the URL unchanged
(db.py). What asyncpg does not do is refuse a bad URL: a query option it does not
know goes to the server as a setting and fails every connection, long after startup.
This module refuses such a URL by name when the settings load, with the fix. It uses
the standard library only: importing SQLAlchemy or asyncpg here would slow down the
one-line refusal of a bad environment.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

# The query options asyncpg's own parser reads (asyncpg.connect_utils, 0.32).
ASYNCPG_OPTIONS = frozenset({
    "host", "port", "user", "password", "dbname", "database", "passfile", "service",
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "sslnegotiation",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
    "krbsrvname", "gsslib",
})  # fmt: skip
# Options asyncpg sends to the server as they are, which PostgreSQL takes at startup.
SERVER_OPTIONS = frozenset({"application_name", "options"})
# Files the URL names: missing, every connection would fail; refused at start instead.
FILE_OPTIONS = frozenset({"passfile", "sslrootcert", "sslcert", "sslkey", "sslcrl"})
# libpq options with no asyncpg equivalent. "prefer"/"disable" is what asyncpg does
# anyway, so those are dropped; "require" is a promise asyncpg cannot keep: refused.
BEST_EFFORT_OPTIONS = frozenset({"channel_binding", "gssencmode"})
REFUSED_OPTIONS = {
    "connect_timeout": "set DATABASE_POOL_TIMEOUT_SECONDS instead",
}
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
TARGET_SESSION_ATTRS = frozenset(
    {"any", "primary", "standby", "read-write", "read-only", "prefer-standby"}
)
EXAMPLE = "postgresql://user:password@host:5432/db"


def asyncpg_dsn(value: str) -> str:
    """DATABASE_URL as the DSN ``asyncpg.connect()`` parses, or ValueError naming the fix.

    The scheme becomes ``postgresql``; options asyncpg cannot honour are refused by name
    (they would otherwise reach the server as settings and fail every connection).
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError(f"must be a PostgreSQL URL: {EXAMPLE}")
    url = urlsplit(f"postgresql://{rest}")
    hosts = url.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        # Each host's port must be a number (libpq's several-hosts form: h1:5432,h2).
        port = host.rpartition("]")[2].partition(":")[2]
        if port and not port.isdigit():
            raise ValueError("is not a valid URL")
    query = parse_qsl(url.query, keep_blank_values=True)
    kept: list[tuple[str, str]] = []
    for key, option in query:
        if key == "sslmode" and option not in SSL_MODES:
            raise ValueError(f"{key}={option} is not one of {sorted(SSL_MODES)}")
        if key == "target_session_attrs" and option not in TARGET_SESSION_ATTRS:
            allowed = sorted(TARGET_SESSION_ATTRS)
            raise ValueError(f"target_session_attrs={option} is not one of {allowed}")
        if key == "sslrootcert" and option == "system":
            # libpq 16's "the operating system's CA store"; asyncpg would open a file so named.
            raise ValueError(
                "sslrootcert=system is not supported by asyncpg: name the CA bundle's file, "
                "e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt"
            )
        if key in FILE_OPTIONS and not Path(option).is_file():
            raise ValueError(f"{key}={option}: no such file")
        if key == "options":
            _check_options(option)
        if key in BEST_EFFORT_OPTIONS:
            if option == "require":
                raise ValueError(f"{key}=require is not supported by asyncpg")
            continue
        if key in REFUSED_OPTIONS:
            raise ValueError(f"{key} is not supported in the URL: {REFUSED_OPTIONS[key]}")
        if key not in ASYNCPG_OPTIONS | SERVER_OPTIONS:
            raise ValueError(
                f"unknown connection option {key!r}: asyncpg would send it to the server "
                "as a setting, and every connection would fail"
            )
        kept.append((key, option))
    if not hosts and not any(key in {"host", "service"} for key, _ in kept):
        raise ValueError(f"has no host: {EXAMPLE}")
    # The URL as given up to its query (urlunsplit would drop the "//" of an empty host),
    # and %20 for a space in the query, as libpq writes it.
    base = f"postgresql://{rest.partition('?')[0]}"
    return f"{base}?{urlencode(kept, quote_via=quote)}" if kept else base


def _check_options(options: str) -> None:
    """libpq's ``options=-c name=value -c ...``: anything else fails at the server."""
    for word in options.replace("-c ", "-c").split():
        name, sep, _ = word.removeprefix("-c").partition("=")
        if not word.startswith("-c") or not sep or not name:
            raise ValueError(f"options={options!r}: only '-c name=value' settings are supported")

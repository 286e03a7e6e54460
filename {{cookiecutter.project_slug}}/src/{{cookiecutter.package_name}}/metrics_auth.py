"""/metrics and authentication: requests refused for their bearer token, by reason.

The reasons are auth.py's fixed set (missing, malformed, too_large, algorithm,
unknown_key, bad_signature, expired, not_yet_valid, wrong_issuer, wrong_audience,
missing_claim, invalid_claim, insufficient_scope), so no token can create a new series.
A rise of ``expired`` is a client that does not renew; of ``bad_signature`` or
``unknown_key``, forged tokens or a key rotation the issuer did not announce.
"""

from __future__ import annotations

from prometheus_client import Counter

REJECTED = Counter("auth_rejected_tokens", "Requests refused for their bearer token", ["reason"])


def count_rejection(reason: str) -> None:
    REJECTED.labels(reason).inc()

"""Tokens: signing, checking, expiry (also of a token already checked), and what roles may do;
and the core's independence from the web stack."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from eventstore import AssetScope, TaskScope
from eventstore.service.auth import (
    TokenError,
    TokenVerifier,
    authorize,
    make_token,
    parse_ttl,
    signing_key,
)

SECRET = b"unit-test-secret-0123456789"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_checked_token_still_expires() -> None:
    verifier = TokenVerifier(SECRET)
    token = make_token(SECRET, "admin", ttl=timedelta(minutes=5), now=NOW)
    assert verifier.verify(token, NOW.timestamp()).role == "admin"
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(token, (NOW + timedelta(minutes=5)).timestamp())


def test_task_claims_carry_instance_try_and_actor() -> None:
    token = make_token(SECRET, "task", dag="d", run="r", task="t", map_index=2, try_number=3)
    claims = TokenVerifier(SECRET).verify(token, NOW.timestamp())
    assert claims.task_scope() == TaskScope("d", "r", "t", 2)
    assert (claims.try_number, claims.actor) == (3, "task")
    admin = TokenVerifier(SECRET).verify(make_token(SECRET, "admin", name="ops"), 0)
    assert (admin.try_number, admin.actor, admin.task_scope()) == (None, "api:ops", None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "task", "dag": "d"}, "needs --dag, --run and --task"),
        ({"role": "task", "dag": "d", "run": "r", "task": "t", "try_number": -1}, "try must be"),
        ({"role": "task", "dag": "d", "run": "r", "task": "t", "map_index": -2}, "map_index"),
        ({"role": "auditor", "try_number": 1}, "names no task instance"),
        ({"role": "admin", "ttl": timedelta(0)}, "ttl must be positive"),
        ({"role": "root"}, "role must be"),
    ],
)
def test_make_token_rejects_bad_claims(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_token(SECRET, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)],
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0"])
def test_parse_ttl_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_ttl(text)


def test_authorize_matrix() -> None:
    verifier = TokenVerifier(SECRET)
    own = TaskScope("d", "r", "t")
    other = TaskScope("d", "r", "other")
    asset = AssetScope(name="orders")
    task = verifier.verify(make_token(SECRET, "task", dag="d", run="r", task="t"), 0)
    auditor = verifier.verify(make_token(SECRET, "auditor"), 0)
    admin = verifier.verify(make_token(SECRET, "admin"), 0)
    actions = ("read", "history", "write", "delete", "clear", "compact")
    allowed = {
        (who, action, scope)
        for who, claims in (("task", task), ("auditor", auditor), ("admin", admin))
        for action in actions
        for scope, target in (("own", own), ("other", other), ("asset", asset))
        if authorize(claims, action, target) is None  # type: ignore[arg-type]
    }
    assert allowed == {
        *{("task", a, "own") for a in ("read", "history", "write", "delete", "clear")},
        *{("task", a, "asset") for a in ("read", "write", "delete")},
        *{("auditor", a, s) for a in ("read", "history") for s in ("own", "other", "asset")},
        *{("admin", a, s) for a in actions for s in ("own", "other", "asset")},
    }


def test_the_core_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, eventstore, eventstore.cli, projections, eventstore.service.auth\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'aiohttp', 'yarl'))\n"
        "assert not web, web\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- strict decoding (JSON Web Tokens checked by PyJWT) ----------------------------------------


def test_token_is_a_json_web_token_with_audience_expiry_and_claims() -> None:
    token = make_token(SECRET, "task", dag="d", run="r", task="t", try_number=2, now=NOW)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token,
        signing_key(SECRET),
        algorithms=["HS256"],
        audience="tasktrail",
        options={"verify_exp": False},
    )
    assert header["alg"] == "HS256"
    assert claims["aud"] == "tasktrail"
    assert claims["exp"] == int((NOW + timedelta(hours=24)).timestamp())
    assert claims["iat"] == int(NOW.timestamp())
    assert (claims["role"], claims["dag"], claims["try"]) == ("task", "d", 2)


@pytest.mark.parametrize("suffix", ["!!", "==", "=", " ", ".", "\n"])
def test_token_with_characters_appended_is_refused(suffix: str) -> None:
    token = make_token(SECRET, "admin")
    with pytest.raises(TokenError, match="three canonical base64url segments"):
        TokenVerifier(SECRET).verify(token + suffix, 0)


def test_signature_with_unused_bits_set_is_refused() -> None:
    token = make_token(SECRET, "admin")
    body, _, signature = token.rpartition(".")
    # 32 bytes are 43 characters: the last carries 2 unused bits. Setting one decodes to the
    # same bytes, so a lax decoder would take this as the same token.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 1]
    assert twin != signature
    with pytest.raises(TokenError, match="canonical"):
        TokenVerifier(SECRET).verify(f"{body}.{twin}", 0)


def _signed(payload: dict[str, object], algorithm: str = "HS256") -> str:
    key = signing_key(SECRET)
    return jwt.encode(payload, key if algorithm == "HS256" else key * 2, algorithm=algorithm)


GOOD: dict[str, object] = {"role": "admin", "exp": 2**40, "iat": 0, "aud": "tasktrail"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({**GOOD, "aud": "someone-else"}, "not for tasktrail"),
        ({k: v for k, v in GOOD.items() if k != "aud"}, "aud"),
        ({k: v for k, v in GOOD.items() if k != "exp"}, "exp"),
        ({k: v for k, v in GOOD.items() if k != "role"}, "role"),
        ({**GOOD, "role": "root"}, "claims are not valid"),
        ({**GOOD, "admin": True}, "claims are not valid"),
        ({**GOOD, "map_index": "2"}, "claims are not valid"),
        ({**GOOD, "exp": "never"}, "not valid"),
    ],
    ids=["audience", "no-audience", "no-expiry", "no-role", "bad-role", "unknown", "type", "exp"],
)
def test_token_with_wrong_or_missing_claims_is_refused(
    payload: dict[str, object], message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        TokenVerifier(SECRET).verify(_signed(payload), 0)


def test_token_of_another_algorithm_is_refused() -> None:
    with pytest.raises(TokenError, match="not valid"):
        TokenVerifier(SECRET).verify(_signed(GOOD, "HS512"), 0)
    unsigned = jwt.encode(GOOD, None, algorithm="none")
    with pytest.raises(TokenError, match=r"canonical|not valid"):
        TokenVerifier(SECRET).verify(unsigned, 0)

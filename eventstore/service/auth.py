"""Bearer tokens: signed claims naming a role and, for a task, its task instance and try.

A token is a JSON Web Token (RFC 7519) made and checked by PyJWT: HS256 under a key derived
from the service's secret (`signing_key`), audience `tasktrail`, with `exp` and `iat`, and the
claims of `Claims` (role, name, and for a task token dag, run, task, map_index, try).
Checking is strict: exactly three canonical base64url segments (no padding, no stray
characters, no unused bits set), the HS256 algorithm only, the audience, every required claim
present with its type, and no claim it does not know. The expiry is compared with the
service's clock on every request, also for a token already checked (`TokenVerifier` remembers
those, so a request costs one dict lookup).
The secret comes from TASKTRAIL_SECRET, a secret file, or one made and kept beside the database.

What a role may do (`authorize`):

    action    task token                        auditor   admin
    read      its own task instance, any asset  anything  anything
    history   its own task instance             anything  anything
    write     its own task instance, any asset  no        anything
    delete    its own task instance, any asset  no        anything
    clear     its own task instance (and, for a no        anything
              fleet clear, every map index of it)
    compact   no                                no        yes
    erase     no                                no        yes
    rewind    no                                no        yes
    feed      its own task instance's events    anything  anything

A value written with sensitive=True is shown (`sees_sensitive`) to admins and to the task token
of the task instance that holds it; everyone else gets it masked.

A task token's writes are stamped with its own try. An admin token's task writes are stamped with
the try the request names in `Tasktrail-Try`, or no try without it: one admin token can so write
for every task instance as the right try (Airflow's API server holds one; see
docs/how-to/airflow.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import jwt
import msgspec

from eventstore.log.errors import ConfigError
from eventstore.log.scopes import AssetScope, Scope, TaskScope

__all__ = [
    "Action",
    "Claims",
    "Role",
    "TokenError",
    "TokenVerifier",
    "authorize",
    "load_secret",
    "make_token",
    "parse_ttl",
    "secret_path_for",
    "sees_sensitive",
    "signing_key",
]

Role = Literal["task", "auditor", "admin"]
Action = Literal[
    "read", "history", "write", "delete", "clear", "compact", "erase", "rewind", "feed"
]

SECRET_ENV: Final = "TASKTRAIL_SECRET"
AUDIENCE: Final = "tasktrail"
_ALGORITHM: Final = "HS256"


class Claims(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a token says about its bearer. Task tokens name one task instance."""

    role: Role
    exp: int  # expiry, seconds since the epoch
    name: str = ""  # who the token was made for; admin writes are recorded as "api:<name>"
    dag: str | None = None
    run: str | None = None
    task: str | None = None
    map_index: int = -1
    try_: int | None = msgspec.field(default=None, name="try")

    def task_scope(self) -> TaskScope | None:
        if self.role != "task" or self.dag is None or self.run is None or self.task is None:
            return None
        return TaskScope(self.dag, self.run, self.task, self.map_index)

    @property
    def actor(self) -> str:
        return "task" if self.role == "task" else f"api:{self.name or self.role}"

    @property
    def try_number(self) -> int | None:
        """The try a write is stamped with: the task token's own, none for other roles."""
        return self.try_ if self.role == "task" else None


class TokenError(Exception):
    """A token that is missing, malformed, badly signed or expired; the message says which."""


class _Token(Claims, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The whole payload of a token: the claims and the registered ones JWT adds."""

    aud: str
    iat: int


_convert_claims = msgspec.convert


def signing_key(secret: bytes) -> bytes:
    """The HMAC key tokens are signed with: 32 bytes derived from the service's secret (which
    may be as short as 16 characters; RFC 7518 wants an HS256 key of at least 32 bytes)."""
    return hashlib.sha256(b"tasktrail/token-signing-key/1\0" + secret).digest()


# A base64url segment as RFC 7515 writes it: the URL-safe alphabet, no padding.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")


def make_token(
    secret: bytes,
    role: Role,
    *,
    ttl: timedelta = timedelta(hours=24),
    name: str = "",
    dag: str | None = None,
    run: str | None = None,
    task: str | None = None,
    map_index: int = -1,
    try_number: int | None = None,
    now: datetime | None = None,
) -> str:
    """A signed token. A task token needs dag, run and task; other roles take none of them."""
    if role not in ("task", "auditor", "admin"):
        raise ValueError(f"role must be task, auditor or admin, got {role!r}")
    if role == "task":
        if not (dag and run and task):
            raise ValueError("a task token needs --dag, --run and --task")
        TaskScope(dag, run, task, map_index)  # the same checks a scope makes
        if try_number is not None and try_number < 0:
            raise ValueError(f"try must be >= 0, got {try_number}")
    elif dag or run or task or try_number is not None or map_index != -1:
        raise ValueError(f"an {role} token names no task instance; drop --dag/--run/--task/--try")
    if ttl <= timedelta(0):
        raise ValueError(f"a token's ttl must be positive, got {ttl}")
    issued = now or datetime.now(UTC)
    token = _Token(
        role=role,
        exp=int((issued + ttl).timestamp()),
        name=name,
        dag=dag,
        run=run,
        task=task,
        map_index=map_index,
        try_=try_number,
        aud=AUDIENCE,
        iat=int(issued.timestamp()),
    )
    payload: dict[str, Any] = msgspec.to_builtins(token)
    return jwt.encode(payload, signing_key(secret), algorithm=_ALGORITHM)


class TokenVerifier:
    """Checks tokens, remembering the ones it has verified so a request costs one dict lookup."""

    def __init__(self, secret: bytes, *, cache_size: int = 4096) -> None:
        self._key = signing_key(secret)
        self._cache: dict[str, Claims] = {}
        self._headers: dict[bytes, Claims] = {}
        self._cache_size = cache_size

    def known_header(self, header: bytes, now: float) -> Claims | None:
        """The claims of an Authorization header whose token was verified before and has not
        expired; None: read the header and `verify` its token (which says what is wrong)."""
        claims = self._headers.get(header)
        return claims if claims is not None and claims.exp > now else None

    def remember_header(self, header: bytes, claims: Claims) -> None:
        """`header` carries the token of `claims`, just verified: next time `known_header`."""
        if len(self._headers) >= self._cache_size:
            self._headers.clear()
        self._headers[header] = claims

    def verify(self, token: str, now: float) -> Claims:
        claims = self._cache.get(token)
        if claims is None:
            claims = self._check(token)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[token] = claims
        if claims.exp <= now:
            raise TokenError("the token has expired; make a new one with `tasktrail token`")
        return claims

    def _check(self, token: str) -> Claims:
        segments = token.split(".")
        if len(segments) != 3 or not all(_canonical(s) for s in segments):
            raise TokenError(
                "the token is not a JSON Web Token of three canonical base64url segments; "
                "make one with `tasktrail token`"
            )
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                # The expiry is checked against the service's clock by `verify`, on every
                # request; PyJWT would read the system clock, once.
                options={"require": ["exp", "iat", "aud", "role"], "verify_exp": False},
            )
        except jwt.InvalidSignatureError:
            raise TokenError("the token's signature does not match this service's secret") from None
        except jwt.InvalidAudienceError:
            raise TokenError(f"the token is not for {AUDIENCE} (its audience differs)") from None
        except jwt.InvalidTokenError as error:
            raise TokenError(f"the token is not valid: {error}") from None
        try:
            checked = _convert_claims(payload, _Token)
        except msgspec.ValidationError as error:
            raise TokenError(f"the token's claims are not valid: {error}") from None
        # The claims without the registered ones JWT adds (aud, iat).
        return Claims(**{name: getattr(checked, name) for name in Claims.__struct_fields__})


def _canonical(segment: str) -> bool:
    """Whether a segment is base64url exactly as it would be written: URL-safe letters only,
    no padding, and no bits set past the data (else `ab` and `ac` could both stand for it)."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        return False
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode() == segment


def authorize(claims: Claims, action: Action, scope: Scope | None) -> str | None:
    """None if the bearer may do `action` on `scope`, else the reason it may not."""
    if claims.role == "admin":
        return None
    if claims.role == "auditor":
        if action in ("read", "history", "feed"):
            return None
        return f"an auditor token reads and writes nothing; {action} needs an admin token"
    if action == "compact":
        return "compaction needs an admin token"
    if action == "erase":
        return "erasing a scope needs an admin token"
    if action == "rewind":
        return "rewinding a scope needs an admin token"
    if action == "feed":
        # The feed route keeps a task token to its own task instance's events.
        return None if claims.task_scope() is not None else "this token names no task instance"
    if isinstance(scope, AssetScope):
        if action in ("read", "write", "delete"):
            return None
        return f"a task token cannot {action} an asset's store; that needs an admin token"
    own = claims.task_scope()
    if scope is not None and own is not None and scope == own:
        return None
    return f"this task token is for {own}, not {scope}"


def sees_sensitive(claims: Claims | None, scope: Scope) -> bool:
    """Whether the bearer sees values written with sensitive=True in `scope` unmasked."""
    if claims is None:
        return False
    if claims.role == "admin":
        return True
    return claims.role == "task" and claims.task_scope() == scope


def parse_ttl(text: str) -> timedelta:
    """A duration like 3600, 90s, 30m, 12h or 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a duration; use e.g. 3600, 30m, 12h or 7d"
        ) from None
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


def secret_path_for(db_url: str) -> Path:
    """Where a made secret is kept: beside a SQLite file, else ./tasktrail.secret."""
    if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
        return Path(db_url.removeprefix("sqlite:///") + ".secret")
    return Path("tasktrail.secret")


def load_secret(db_url: str, secret_file: str | os.PathLike[str] | None = None) -> bytes:
    """The signing secret: the given file, else $TASKTRAIL_SECRET, else the kept one (made if
    missing)."""
    if secret_file is not None:
        path = Path(secret_file)
        if not path.is_file():
            raise ConfigError(f"secret file {str(path)!r} does not exist")
        return _read_secret(path)
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    path = secret_path_for(db_url)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once agree on one secret; 0600: only the owner reads it.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _read_secret(path)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_text().strip().encode()
    for _ in range(50):
        if secret:
            break
        # Another process made the file an instant ago and is still writing it.
        time.sleep(0.02)
        secret = path.read_text().strip().encode()
    if len(secret) < 16:
        raise ConfigError(f"the secret in {str(path)!r} is shorter than 16 characters")
    return secret

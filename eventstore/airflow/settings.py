"""The backend's settings: where the store is, what the mirror holds, which keys are sensitive."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from typing import Final, Literal

from eventstore.log.config import StoreConfig
from eventstore.log.errors import ConfigError

__all__ = [
    "ACTOR",
    "MASK",
    "MIRROR_MODES",
    "MirrorMode",
    "check_token",
    "configured",
    "is_service",
    "mirror_setting",
    "sensitive_names",
    "store_config",
]

ACTOR: Final = "airflow"
# What the mirror holds, in `masked` mode, for a value tasktrail keeps sensitive or sealed.
MASK: Final = "<masked>"
MirrorMode = Literal["values", "masked", "off"]
MIRROR_MODES: Final = ("values", "masked", "off")


def store_config() -> StoreConfig:
    """The store settings the backend uses.

    Airflow lets oversized values through with a warning (`[state_store] max_value_storage_bytes`
    only bounds its public REST API), so the backend sets no size limit of its own.
    """
    return StoreConfig(max_value_bytes=0)


def mirror_setting() -> MirrorMode:
    from airflow.configuration import conf

    mode: MirrorMode = conf.get("tasktrail", "mirror", fallback="masked").strip().lower()
    return mode


def sensitive_names(extra: Iterable[str] | None) -> frozenset[str]:
    """Airflow's sensitive names, `[core] sensitive_var_conn_names`, `[tasktrail]
    sensitive_keys`, and `extra`: substrings of a normalized key name."""
    from airflow._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS
    from airflow.configuration import conf

    names = set(DEFAULT_SENSITIVE_FIELDS)
    for configured in (
        conf.get("core", "sensitive_var_conn_names", fallback="") or "",
        conf.get("tasktrail", "sensitive_keys", fallback="") or "",
    ):
        names.update(configured.split(","))
    names.update(extra or ())
    return frozenset(n.strip().lower() for n in names if n.strip())


def configured() -> tuple[str, str | None]:
    """The store the environment names: TASKTRAIL_URL and TASKTRAIL_TOKEN, or TASKTRAIL_DB."""
    service = os.environ.get("TASKTRAIL_URL")
    database = os.environ.get("TASKTRAIL_DB")
    if service and database:
        raise ConfigError(
            "both TASKTRAIL_URL (a tasktrail service) and TASKTRAIL_DB (a database) are set; "
            "unset one of them"
        )
    if service:
        if not is_service(service):
            raise ConfigError(
                f"TASKTRAIL_URL must be the service's http:// or https:// URL, got {service!r}; "
                "a database URL goes in TASKTRAIL_DB"
            )
        return service, os.environ.get("TASKTRAIL_TOKEN")
    return database or default_url(), None


def is_service(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def check_token(token: str | None) -> None:
    """Refuse a missing token, or one whose role cannot write for every task instance.

    The role is read from the token's payload, unverified: the service checks the signature.
    """
    if not token:
        raise ConfigError(
            "TASKTRAIL_URL is set but TASKTRAIL_TOKEN is not; make an admin token on the "
            "service's host: tasktrail token --role admin --name airflow --ttl 365d"
        )
    try:
        payload = token.split(".")[1]
        role = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["role"]
    except (IndexError, ValueError, KeyError, TypeError):
        return  # not readable here: the service answers 401 and says why
    if role != "admin":
        raise ConfigError(
            f"TASKTRAIL_TOKEN is a {role} token; Airflow writes for every task instance and "
            "needs an admin token: tasktrail token --role admin --name airflow --ttl 365d"
        )


def default_url() -> str:
    from airflow.configuration import AIRFLOW_HOME

    return f"sqlite:///{os.path.join(AIRFLOW_HOME, 'tasktrail.db')}"

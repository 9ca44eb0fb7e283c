"""What a checkpoint belongs to: one task instance, or one asset."""

from __future__ import annotations

import msgspec

from eventstore.log.values import is_unicode

__all__ = ["AssetScope", "Scope", "TaskScope", "scope_key"]


class TaskScope(msgspec.Struct, frozen=True, tag="task", tag_field="scope"):
    """One task instance; every try of it shares the scope, each map index is its own."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def __post_init__(self) -> None:
        for field in ("dag_id", "run_id", "task_id"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"TaskScope.{field} must be a non-empty str, got {value!r}")
            if not is_unicode(value):
                raise ValueError(f"TaskScope.{field} {value!r} is not valid Unicode text")
        if type(self.map_index) is not int or self.map_index < -1:
            raise ValueError(
                "TaskScope.map_index must be an int >= -1 (-1 for unmapped), "
                f"got {self.map_index!r}"
            )

    def __str__(self) -> str:
        suffix = "" if self.map_index == -1 else f"[{self.map_index}]"
        return f"task {self.dag_id}/{self.run_id}/{self.task_id}{suffix}"


class AssetScope(msgspec.Struct, frozen=True, tag="asset", tag_field="scope"):
    """One asset across all runs, named by its name, its uri, or both."""

    name: str | None = None
    uri: str | None = None

    def __post_init__(self) -> None:
        if self.name is None and self.uri is None:
            raise ValueError("AssetScope needs a name or a uri (or both), got neither")
        for field in ("name", "uri"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"AssetScope.{field} must be a non-empty str or None, got {value!r}"
                )
            if value is not None and not is_unicode(value):
                raise ValueError(f"AssetScope.{field} {value!r} is not valid Unicode text")

    def __str__(self) -> str:
        parts = [f"{f}={getattr(self, f)}" for f in ("name", "uri") if getattr(self, f) is not None]
        return "asset " + " ".join(parts)


Scope = TaskScope | AssetScope

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(Scope)


def scope_key(scope: Scope) -> str:
    """The canonical text of a scope, unique per scope; the backends index it."""
    return _encode(scope).decode()


def scope_from_key(key: str | bytes) -> Scope:
    scope: Scope = _decoder.decode(key)
    return scope

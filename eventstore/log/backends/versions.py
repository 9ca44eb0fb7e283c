"""Where a position or a time lands in a scope, as SQL both databases run (schema step 5)."""

from __future__ import annotations

from typing import Final

__all__ = ["version_through"]

# The largest version of the scope whose {column} is at most the parameter :{bound}, by a binary
# search over the (scope_id, version) index: within a scope, seq and recorded_at grow with the
# version, so ~2 log2(n) seeks answer where a position or a time lands, with no index of its own
# to write. Versions may have gaps (compaction): each probe takes the first version at or past
# the middle. Invariant: the answer (0 for none) lies in [lo, hi]; each step halves the interval.
# (CAST: PostgreSQL wants the recursive columns' type, a 64-bit integer, from the first row.)
_VERSION_THROUGH: Final = """(WITH RECURSIVE search (lo, hi) AS (
    SELECT CAST(0 AS BIGINT),
        coalesce((SELECT max(version) FROM events WHERE scope_id = :scope), 0)
    UNION ALL
    SELECT
        CASE WHEN ({probe}) <= :{bound} THEN (lo + hi + 1) / 2 ELSE lo END,
        CASE WHEN ({probe}) <= :{bound} THEN hi ELSE (lo + hi + 1) / 2 - 1 END
    FROM search WHERE lo < hi
) SELECT min(hi) FROM search)"""
_PROBE: Final = (
    "SELECT {column} FROM events WHERE scope_id = :scope AND version >= (lo + hi + 1) / 2 "
    "ORDER BY version LIMIT 1"
)


def version_through(column: str, bound: str) -> str:
    """The search as a scalar subquery, for a clause; `:scope` and `:{bound}` are parameters."""
    return _VERSION_THROUGH.format(probe=_PROBE.format(column=column), bound=bound)

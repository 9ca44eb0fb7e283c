"""The live feed, under the name the faces have imported it by: it is part of the log
(`eventstore.log.feed`), which reads the log by position; `store.subscribe` opens it."""

from eventstore.log.feed import ScopeMatch, Subscription

__all__ = ["ScopeMatch", "Subscription"]

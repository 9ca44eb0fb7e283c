"""The service's Prometheus metrics, kept in plain dicts and written in the text format.

A handful of counters and one latency histogram do not need a client library; recording one
request is a few dict updates.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

__all__ = ["Metrics"]

# Request latency buckets in seconds, from a cached read to a slow fsync.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class Metrics:
    """Requests by route/method/status, their latencies, appends by outcome, compactions."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.appends: dict[tuple[str, str], int] = {}  # (scope kind, outcome) -> count
        self.events_appended = 0
        self.compactions = 0
        self.compaction_events_removed = 0

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((route, method))
        if histogram is None:
            histogram = self.latency[(route, method)] = _Histogram()
        histogram.observe(seconds)

    def append(self, scope_kind: str, outcome: str, events: int = 0) -> None:
        key = (scope_kind, outcome)
        self.appends[key] = self.appends.get(key, 0) + 1
        self.events_appended += events

    def render(self) -> str:
        lines = [
            "# HELP tasktrail_http_requests_total HTTP requests answered.",
            "# TYPE tasktrail_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            labels = f'route="{_esc(route)}",method="{method}",status="{status}"'
            lines.append(f"tasktrail_http_requests_total{{{labels}}} {n}")
        lines += [
            "# HELP tasktrail_http_request_duration_seconds Time to answer an HTTP request.",
            "# TYPE tasktrail_http_request_duration_seconds histogram",
        ]
        for (route, method), h in sorted(self.latency.items()):
            labels = f'route="{_esc(route)}",method="{method}"'
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), h.counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'tasktrail_http_request_duration_seconds_bucket{{{labels},le="{le}"}} '
                    f"{cumulative}"
                )
            lines.append(f"tasktrail_http_request_duration_seconds_sum{{{labels}}} {h.total}")
            lines.append(f"tasktrail_http_request_duration_seconds_count{{{labels}}} {h.count}")
        lines += [
            "# HELP tasktrail_appends_total Writes handed to the store, by scope kind and outcome.",
            "# TYPE tasktrail_appends_total counter",
        ]
        for (kind, outcome), n in sorted(self.appends.items()):
            lines.append(f'tasktrail_appends_total{{scope="{kind}",outcome="{outcome}"}} {n}')
        lines += [
            "# HELP tasktrail_events_appended_total Events appended by the service's writes.",
            "# TYPE tasktrail_events_appended_total counter",
            f"tasktrail_events_appended_total {self.events_appended}",
            "# HELP tasktrail_compactions_total Compaction runs.",
            "# TYPE tasktrail_compactions_total counter",
            f"tasktrail_compactions_total {self.compactions}",
            "# HELP tasktrail_compaction_events_removed_total Events removed by compaction.",
            "# TYPE tasktrail_compaction_events_removed_total counter",
            f"tasktrail_compaction_events_removed_total {self.compaction_events_removed}",
        ]
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')

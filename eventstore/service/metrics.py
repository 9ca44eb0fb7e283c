"""The service's Prometheus metrics, kept in plain dicts and written in the text format.

A handful of counters and one latency histogram do not need a client library; recording one
request is a few dict updates.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

from eventstore.log.errors import CompactionRunningError
from projections.compaction import CompactionReport

__all__ = ["Metrics"]

# Request latency buckets in seconds, from a cached read to a slow fsync.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0


class Metrics:
    """Requests by route/method/status, their latencies, appends by outcome, compactions (runs,
    what they removed, the last one's duration and time, skips and failures)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.appends: dict[tuple[str, str], int] = {}  # (scope kind, outcome) -> count
        self.events_appended = 0
        # Compactions (not dry runs) the service ran, from the route and from its schedule.
        self.compactions = 0
        self.compaction_events_removed = 0
        self.compaction_keys_expired = 0
        self.compaction_last_duration = 0.0
        self.compaction_last_run = 0.0  # Unix time the last one finished; 0: none yet
        self.compactions_skipped = 0  # another process or replica was compacting
        self.compaction_failures = 0

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((route, method))
        if histogram is None:
            histogram = self.latency[(route, method)] = _Histogram()
        histogram.counts[bisect_left(BUCKETS, seconds)] += 1
        histogram.count += 1
        histogram.total += seconds

    def append(self, scope_kind: str, outcome: str, events: int = 0) -> None:
        key = (scope_kind, outcome)
        self.appends[key] = self.appends.get(key, 0) + 1
        self.events_appended += events

    def compacted(self, report: CompactionReport, finished_at: float) -> None:
        if report.dry_run:
            return
        self.compactions += 1
        self.compaction_events_removed += report.events_removed
        self.compaction_keys_expired += report.keys_expired
        self.compaction_last_duration = report.duration_seconds
        self.compaction_last_run = finished_at

    def compaction_error(self, error: Exception) -> None:
        if isinstance(error, CompactionRunningError):
            self.compactions_skipped += 1
        else:
            self.compaction_failures += 1

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
            "# HELP tasktrail_compaction_keys_expired_total Expired keys compaction removed.",
            "# TYPE tasktrail_compaction_keys_expired_total counter",
            f"tasktrail_compaction_keys_expired_total {self.compaction_keys_expired}",
            "# HELP tasktrail_compaction_last_duration_seconds How long the last compaction took.",
            "# TYPE tasktrail_compaction_last_duration_seconds gauge",
            f"tasktrail_compaction_last_duration_seconds {self.compaction_last_duration}",
            "# HELP tasktrail_compaction_last_run_timestamp_seconds When the last compaction "
            "finished (Unix time; 0: none yet).",
            "# TYPE tasktrail_compaction_last_run_timestamp_seconds gauge",
            f"tasktrail_compaction_last_run_timestamp_seconds {self.compaction_last_run}",
            "# HELP tasktrail_compactions_skipped_total Compactions not run because another "
            "process or replica was compacting.",
            "# TYPE tasktrail_compactions_skipped_total counter",
            f"tasktrail_compactions_skipped_total {self.compactions_skipped}",
            "# HELP tasktrail_compaction_failures_total Compactions that failed with an error.",
            "# TYPE tasktrail_compaction_failures_total counter",
            f"tasktrail_compaction_failures_total {self.compaction_failures}",
        ]
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')

"""What is computed from the log: current values, history and time-travel, rebuild and verify."""

from projections.compaction import CompactionReport, run_compaction_schedule
from projections.current import ScopeState, apply
from projections.history import Diff, History, Position, TrySummary
from projections.points import At
from projections.rewind import RewindResult
from projections.verify import Mismatch, VerifyReport

__all__ = [
    "At",
    "CompactionReport",
    "Diff",
    "History",
    "Mismatch",
    "Position",
    "RewindResult",
    "ScopeState",
    "TrySummary",
    "VerifyReport",
    "apply",
    "run_compaction_schedule",
]

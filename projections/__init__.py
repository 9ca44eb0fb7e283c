"""What is computed from the log: current values, history and time-travel, rebuild and verify."""

from projections.current import ScopeState, apply
from projections.verify import Mismatch, VerifyReport

__all__ = ["Mismatch", "ScopeState", "VerifyReport", "apply"]

"""Encryption at rest, in two parts: the stored forms of a value (`eventstore.log.envelope`)
and the vault that seals and opens them (`eventstore.log.vault`), with the master keys parsed in
`eventstore.log.master_keys`. The jobs that walk and rewrite the log are projections:
`projections.reencrypt` and `projections.scrub`.

This module gathers the names the rest of the code imports.
"""

from eventstore.log.envelope import ERASED, MASKED, Erased, Masked, is_sensitive, stored_value
from eventstore.log.vault import DataKey, RotationReport, Vault, key_store_location

__all__ = [
    "ERASED",
    "MASKED",
    "DataKey",
    "Erased",
    "Masked",
    "RotationReport",
    "Vault",
    "is_sensitive",
    "key_store_location",
    "stored_value",
]

"""The log, tasktrail's first floor: scopes, events, errors, config, value rules, the append path
and its group-commit writer, encryption at rest, key stores and the storage backends.

Nothing here imports `projections` or a face (the store API, blocking facade, client, service,
CLI, Airflow); the import-linter contract in pyproject.toml holds that.
"""

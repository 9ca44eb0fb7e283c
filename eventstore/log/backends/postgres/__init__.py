"""The PostgreSQL backend (the `postgres` extra): the log, its projection and the data-key store."""

"""The embedded SQLite backend: the log and its projection in one file, aiosqlite underneath."""

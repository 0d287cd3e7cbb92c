"""Audit: appends every event of every topic to a hash-chained log in PostgreSQL."""

"""Durable background jobs in PostgreSQL: stored with their upload, run by worker processes."""

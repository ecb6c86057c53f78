"""Helpers for the PostgreSQL chaos tests: the worker processes they start, and the harness.

``worker`` runs as a subprocess (``python -m tests.integration.pgprocs.worker``), one per
simulated host; ``jobs`` holds the job types those workers run; ``harness`` is the test side:
starting, killing and stopping worker processes, and private PostgreSQL servers that a test
may restart or reconfigure without disturbing the shared one.
"""

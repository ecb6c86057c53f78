"""Helpers for the crash and race tests on the SQLite store (one file shared by processes).

``jobs`` holds the app and job types the worker processes run; ``worker`` is the worker entry
(``python -m tests.integration.procs.worker``); ``claimer`` and ``reaper`` are the bodies of
the processes that race ``claim`` and ``reap``; ``harness`` is the test side: starting,
signalling and always killing those processes, and reading what the jobs recorded.
"""

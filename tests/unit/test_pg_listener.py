"""The PostgreSQL store's work listener never loses a wake-up between two waits."""

from __future__ import annotations

import threading
import time

from conveyor.stores.postgres.listener import WorkListener


def test_a_wake_up_between_two_waits_ends_the_next_wait_at_once() -> None:
    # nothing listens on port 1: the thread retries in the background, which is all we need
    listener = WorkListener("host=127.0.0.1 port=1 connect_timeout=1", "work", "pg://test")
    try:
        listener.wait(0.01)  # the worker waited, then claimed and found nothing...
        listener.wake()  # ...while a NOTIFY came in, before its next wait
        started = time.monotonic()
        listener.wait(60.0)
        assert time.monotonic() - started < 10.0, "the wake-up was lost"
        # and it is used once: the wait after that waits again
        started = time.monotonic()
        listener.wait(0.2)
        assert time.monotonic() - started >= 0.15
    finally:
        listener.close()


def test_a_wake_up_before_the_first_wait_is_a_no_op() -> None:
    """The first wait ignores earlier wake-ups (it returns once the LISTEN is up), so a
    process that never waits (one that only enqueues) takes no lock per wake-up."""
    listener = WorkListener("host=127.0.0.1 port=1 connect_timeout=1", "work", "pg://test")
    try:
        listener.wake()
        assert listener._seq == 0
        listener.wait(0.01)
        listener.wake()  # from now on wake-ups count
        assert listener._seq >= 1
    finally:
        listener.close()


def test_a_wake_up_during_a_wait_ends_it() -> None:
    listener = WorkListener("host=127.0.0.1 port=1 connect_timeout=1", "work", "pg://test")
    try:
        listener.wait(0.01)
        timer = threading.Timer(0.2, listener.wake)
        timer.start()
        started = time.monotonic()
        listener.wait(60.0)
        assert time.monotonic() - started < 10.0
        timer.join()
    finally:
        listener.close()

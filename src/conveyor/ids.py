"""Job ids: UUIDv7 (RFC 9562), time-ordered, in the canonical text form.

A random (v4) id lands at a random place in every index that holds it (the jobs' unique id,
the history's ``(job_id, id)``, dependencies), so each new job dirties a different leaf page
of each of them: once those indexes outgrow the cache, every insert reads and writes pages
all over the file, and on PostgreSQL each first touch after a checkpoint is a full page
image in the WAL. A v7 id starts with the millisecond it was made, so new ids go to the
right-hand end of those indexes, where the pages are already hot; it is still 122 bits
wide, 74 of them random, so ids cannot be guessed from one another.

Within one process ids are also strictly increasing: in the same millisecond the 12-bit
``rand_a`` field counts up from a random start (RFC 9562's method 1), and when it runs out
the timestamp field moves on by a millisecond, so a burst of jobs is ordered as it was
made. Across processes ids are ordered only by their millisecond; nothing in conveyor
relies on id order (the store's ``seq`` orders jobs), it is only kind to indexes.

:func:`new_job_ids` makes a batch's ids at once: the same ids, in the same order, that as many
calls of :func:`new_job_id` in one millisecond would make, for one clock read, one lock and one
``os.urandom`` instead of one of each per id (they were half the cost of a bulk enqueue's
Python). The random bits are read fresh for every call, never kept between calls, so a forked
child can never repeat its parent's ids.
"""

from __future__ import annotations

import os
import struct
import threading
import time

_RAND_A = 0xFFF
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_B = (1 << 62) - 1


class _Clock:
    """The last millisecond an id was made in, and the count within it (shared by threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0

    def reserve(self, count: int, seed: int) -> int:
        """The first of ``count`` consecutive (millisecond, counter) places, as one number
        ``ms << 12 | counter``. In a new millisecond the counter starts at ``seed`` (11 bits:
        room to count up); in the same millisecond, or after the clock stepped back, it
        counts on from the last place, and past 4,095 the count carries into the next
        millisecond."""
        with self.lock:
            ms = time.time_ns() // 1_000_000
            first = ms << 12 | seed if ms > self.last_ms else (
                self.last_ms << 12 | self.counter) + 1
            last = first + count - 1
            self.last_ms, self.counter = last >> 12, last & _RAND_A
            return first


_clock = _Clock()


def new_job_id() -> str:
    """A new job id: a UUIDv7 in lower-case canonical text (what :data:`JOB_ID_PATTERN` takes)."""
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits: rand_b below, a counter seed above
    return _id(_clock.reserve(1, random >> 69), random)


def new_job_ids(count: int) -> list[str]:
    """``count`` new job ids, strictly increasing (see the module's docstring)."""
    if count <= 0:
        return []
    # one 64-bit word of random bits per id (rand_b: its low 62), and one for the counter seed
    words = struct.unpack(f"<{count + 1}Q", os.urandom(8 * (count + 1)))
    first = _clock.reserve(count, words[count] >> 53)  # 11 bits: room to count up
    return [_id(place, random)
            for place, random in zip(range(first, first + count), words[:count], strict=True)]


def _id(place: int, random: int) -> str:
    """The id at ``place`` (``ms << 12 | counter``, from :meth:`_Clock.reserve`), its rand_b
    from ``random``'s low 62 bits, in lower-case canonical text."""
    value = ((place >> 12) << 80) | _VERSION | ((place & _RAND_A) << 64) | _VARIANT | (
        random & _RAND_B)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


#: The length of an id's canonical text.
ID_LENGTH = 36
#: How many characters of an id the CLI, the dashboard and log lines show.
SHORT = 8


def short_id(job_id: str) -> str:
    """The last :data:`SHORT` characters of an id: enough to tell jobs apart on one screen.

    The end, not the start: a v7 id starts with the millisecond it was made, so every job made
    in the same minute or so shares its first 8 characters, while its last 8 are random (for
    the older v4 ids too). A search by id takes either end (see :mod:`conveyor.filters`).
    """
    return job_id[-SHORT:]

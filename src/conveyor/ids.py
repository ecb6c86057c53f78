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
calls of :func:`new_job_id` in one millisecond would make, for one clock read, one lock and two
``os.urandom`` instead of one of each per id (they were half the cost of a bulk enqueue's
Python), and writes their text a batch at a time; its random bits are read fresh for every
call. :func:`new_job_id` takes its random bits from a small pool read and written as text a
batch at a time (:meth:`_Clock.refill`): reading them for each id, with the 128-bit number
formatted and cut in five, was about 20,000 instructions and a system call per ``enqueue()``
(a fifth of its client's Python), this is a few thousand (its place comes from
:meth:`_Clock.advance`, the arithmetic :func:`new_job_ids` uses too). A forked child
empties the pool it inherited before its first id (:func:`os.register_at_fork`, as the
:mod:`random` module reseeds itself), so it can never repeat its parent's ids.
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


#: How many ids' random bits :meth:`_Clock.refill` reads at a time.
POOL = 128


class _Clock:
    """The last millisecond an id was made in, and the count within it (shared by threads);
    the random bits :func:`new_job_id` takes from, and the text of the last millisecond."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0
        #: Random tails of ids (``vvvv-rrrrrrrrrrrr``: the variant and 62 random bits) and
        #: 11-bit counter seeds (used in a new millisecond only), one of each per id: both
        #: run out together, and are refilled together.
        self.tails: list[str] = []
        self.seeds: list[int] = []
        #: The text an id of millisecond ``prefix_ms`` starts with (``tttttttt-tttt-7``).
        self.prefix_ms = -1
        self.prefix = ""

    def refill(self) -> None:
        """Read :data:`POOL` ids' random bits, written as text by C loops (see
        :func:`new_job_ids`), and as many counter seeds. Under :attr:`lock`."""
        raw = bytearray(os.urandom(10 * POOL))
        variant = raw[:2 * POOL]
        variant[0::2] = variant[0::2].translate(_VARIANT_BYTE)
        parts: list[str] = [""] * (2 * POOL)
        parts[0::2] = variant.hex(",", 2).split(",")
        parts[1::2] = raw[2 * POOL:8 * POOL].hex(",", 6).split(",")
        tails = ("%s-%s," * POOL % tuple(parts)).split(",")
        tails.pop()  # after the last comma
        self.tails = tails
        self.seeds = [seed >> 5 for seed in struct.unpack(f">{POOL}H", raw[8 * POOL:])]

    def forget(self) -> None:
        """In a forked child: drop the random bits inherited from the parent (the parent
        takes the same ones next), and the lock, which a parent's thread may have held."""
        self.lock = threading.Lock()
        self.tails = []
        self.seeds = []

    def reserve(self, count: int, seed: int) -> int:
        """The first of ``count`` consecutive (millisecond, counter) places, as one number
        ``ms << 12 | counter``. In a new millisecond the counter starts at ``seed`` (11 bits:
        room to count up); in the same millisecond, or after the clock stepped back, it
        counts on from the last place, and past 4,095 the count carries into the next
        millisecond."""
        with self.lock:
            return self.advance(count, seed)

    def advance(self, count: int, seed: int) -> int:
        """:meth:`reserve` under :attr:`lock`, held by the caller."""
        ms = time.time_ns() // 1_000_000
        first = ms << 12 | seed if ms > self.last_ms else (
            self.last_ms << 12 | self.counter) + 1
        last = first + count - 1
        self.last_ms, self.counter = last >> 12, last & _RAND_A
        return first


_clock = _Clock()


def _forget_in_child() -> None:
    _clock.forget()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_in_child)


def new_job_id() -> str:
    """A new job id: a UUIDv7 in lower-case canonical text (what :data:`JOB_ID_PATTERN` takes).

    Its place as :meth:`_Clock.reserve` gives it, its random bits and counter seed from the
    pool (see the module's docstring), the text of its millisecond kept from the last id."""
    clock = _clock
    with clock.lock:
        if not clock.tails:
            clock.refill()
        place = clock.advance(1, clock.seeds.pop())
        ms = place >> 12
        if ms != clock.prefix_ms:
            clock.prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
            clock.prefix_ms = ms
        return f"{clock.prefix}{place & _RAND_A:03x}-{clock.tails.pop()}"


def new_job_ids(count: int) -> list[str]:
    """``count`` new job ids, strictly increasing (see the module's docstring).

    Written as text a batch at a time, with no Python step per id (an id's text made by
    formatting its 128-bit number and cutting it in five was about 11,000 instructions, a
    tenth of a bulk enqueue's cost per job; this is about 3,500, callgrind): each id is four
    pieces, made for the whole batch by C loops and joined by one ``%`` of the batch:

    - its millisecond as text (``tttttttt-tttt-``), one string per millisecond of the batch;
    - its version and counter (``7ccc``): the batch's consecutive counter values of that
      millisecond packed as 16-bit words, in hex;
    - its variant and the top 14 random bits (``vvvv``): two random bytes, the first with
      its top two bits set to the variant's ``10`` (a translation table), in hex;
    - the other 48 random bits (``rrrrrrrrrrrr``): six random bytes, in hex.
    """
    if count <= 0:
        return []
    variant = bytearray(os.urandom(2 * count + 2))  # two more: the counter's seed
    first = _clock.reserve(count, variant[-2] << 3 | variant[-1] >> 5)  # 11 bits: room to
    del variant[-2:]  # count up
    variant[0::2] = variant[0::2].translate(_VARIANT_BYTE)
    parts: list[str] = [""] * (4 * count)
    parts[2::4] = variant.hex(",", 2).split(",")
    parts[3::4] = os.urandom(6 * count).hex(",", 6).split(",")
    last, at = first + count - 1, 0
    for ms in range(first >> 12, (last >> 12) + 1):  # the batch's milliseconds, in order
        low = max(first, ms << 12) & _RAND_A
        high = min(last, ms << 12 | _RAND_A) & _RAND_A
        end = at + high - low + 1
        parts[4 * at:4 * end:4] = [f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-"] * (end - at)
        parts[4 * at + 1:4 * end:4] = struct.pack(
            f">{end - at}H", *range(_VERSION_WORD | low, (_VERSION_WORD | high) + 1),
        ).hex(",", 2).split(",")
        at = end
    made = ("%s%s-%s-%s," * count % tuple(parts)).split(",")
    made.pop()  # after the last comma
    return made


#: The top byte of rand_b's word with its two top bits set to the variant's ``10``.
_VARIANT_BYTE = bytes(byte & 0x3F | 0x80 for byte in range(256))
#: The version (7) in the top four bits of the 16-bit word it shares with the counter.
_VERSION_WORD = 0x7 << 12


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

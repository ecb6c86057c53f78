"""Job ids are UUIDv7: time-ordered (kind to the indexes that hold them), still unguessable."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

import pytest

from conveyor import ids
from conveyor.ids import new_job_id
from conveyor.model import JOB_ID_PATTERN


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fresh id clock reading ``now[0]`` (ns, from the real clock; tests move it by hand)."""
    at = [time.time_ns()]
    monkeypatch.setattr(ids, "_clock", ids._Clock())
    monkeypatch.setattr("conveyor.ids.time.time_ns", lambda: at[0])
    return at


def _plain(place: int, random: int) -> str:
    """The id at ``place`` (``ms << 12 | counter``), its rand_b from ``random``'s low 62
    bits, written the plain way: the 128-bit number formatted and cut in five."""
    value = ((place >> 12) << 80) | 0x7 << 76 | ((place & 0xFFF) << 64) | 0b10 << 62 | (
        random & ((1 << 62) - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def test_an_id_is_a_canonical_version_7_uuid_of_this_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    text = new_job_id()
    after = time.time_ns() // 1_000_000
    value = uuid.UUID(text)
    assert re.fullmatch(JOB_ID_PATTERN, text) and str(value) == text
    assert (value.version, value.variant) == (7, uuid.RFC_4122)
    assert before <= value.int >> 80 <= after + 1


def test_a_burst_is_strictly_increasing_even_past_the_counter_of_one_millisecond(
        now: list[int]) -> None:
    """With the clock stopped, the 12-bit counter runs out and the id's millisecond moves on."""
    frozen = now[0]
    burst = [new_job_id() for _ in range(10_000)]
    assert burst == sorted(burst) and len(set(burst)) == len(burst)
    stamps = {uuid.UUID(text).int >> 80 for text in burst}
    assert min(stamps) == frozen // 1_000_000 and len(stamps) > 1


def test_a_clock_that_steps_back_does_not_reorder_ids(now: list[int]) -> None:
    first = new_job_id()
    now[0] -= 5_000_000_000  # NTP steps the clock back five seconds
    assert new_job_id() > first


def test_threads_get_distinct_ids_with_random_tails() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_job_id() for _ in range(2_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [text for into in made for text in into]
    assert len(set(every)) == len(every)
    assert len({text[-12:] for text in every}) == len(every)  # the random part differs


def test_a_batch_is_what_as_many_single_calls_in_one_millisecond_make(now: list[int]) -> None:
    """new_job_ids counts on where new_job_id left off (and new_job_id after it), past the
    12-bit counter into the next millisecond, strictly increasing throughout."""
    frozen = now[0]
    made = [new_job_id(), *ids.new_job_ids(5_000), new_job_id(), *ids.new_job_ids(1)]
    assert made == sorted(made) and len(set(made)) == len(made)
    places = [(value.int >> 80) << 12 | (value.int >> 64) & 0xFFF
              for value in map(uuid.UUID, made)]
    assert places == list(range(places[0], places[0] + len(made)))  # no place skipped
    assert places[0] >> 12 == frozen // 1_000_000 < places[-1] >> 12  # counted past the ms
    for text in made:
        value = uuid.UUID(text)
        assert re.fullmatch(JOB_ID_PATTERN, text) and str(value) == text
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
    assert len({text[-12:] for text in made}) == len(made)  # the random part differs
    assert ids.new_job_ids(0) == []


def test_a_batch_in_a_new_millisecond_starts_from_a_random_counter(now: list[int]) -> None:
    starts = set()
    for _ in range(20):
        now[0] += 1_000_000
        first = uuid.UUID(ids.new_job_ids(3)[0]).int
        assert first >> 80 == now[0] // 1_000_000
        starts.add(first >> 64 & 0xFFF)
    assert len(starts) > 1 and max(starts) < 0x800  # a seed of 11 bits: room to count up


@pytest.mark.parametrize("count", [1, 2, 4095, 4096, 4097, 10_000])
def test_a_batch_written_a_batch_at_a_time_is_made_of_its_places_and_random_bits(
        now: list[int], count: int) -> None:
    """Each id of a batch is its place's millisecond and counter, version 7, the RFC's
    variant, and random bits that differ from id to id, across the milliseconds a batch
    spans (a counter starting high carries into the next one mid-batch)."""
    frozen = now[0]
    ids._clock.reserve(1, 0xFF0)  # the next batch starts 15 places before a carry
    made = ids.new_job_ids(count)
    assert len(made) == count
    first = (frozen // 1_000_000) << 12 | 0xFF1
    for n, text in enumerate(made):
        value = uuid.UUID(text)
        assert re.fullmatch(JOB_ID_PATTERN, text) and str(value) == text
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
        assert (value.int >> 80) << 12 | (value.int >> 64) & 0xFFF == first + n
    assert len({text[-17:] for text in made}) == count
    assert made == sorted(made)


def test_an_id_is_the_plain_form_of_its_place_and_random_bits(now: list[int]) -> None:
    """new_job_id writes its text from pieces (the millisecond's text kept, the random bits
    from a pool): the same text as formatting the 128-bit number, across pool refills and a
    counter carried into the next millisecond (the clock stands still: ``now``)."""
    made = [new_job_id() for _ in range(3 * ids.POOL + 4_100)]
    for text in made:
        value = uuid.UUID(text).int
        place = (value >> 80) << 12 | (value >> 64) & 0xFFF
        assert _plain(place, value) == text
    assert len({text[-17:] for text in made}) == len(made)
    assert made == sorted(made)


def test_an_id_in_a_new_millisecond_starts_from_a_random_counter(now: list[int]) -> None:
    """new_job_id's seeds come from its pool: 11 bits (room to count up), not all the same."""
    starts = set()
    for _ in range(ids.POOL + 20):  # past one refill of the pool
        now[0] += 1_000_000
        value = uuid.UUID(new_job_id()).int
        assert value >> 80 == now[0] // 1_000_000
        starts.add(value >> 64 & 0xFFF)
    assert len(starts) > 1 and max(starts) < 0x800


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_take_its_parents_random_bits() -> None:
    """The pool of random bits new_job_id draws from is dropped in a forked child: a parent
    and its child making ids in the same millisecond never make the same one."""
    new_job_id()  # the pool is full: the child inherits it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, ",".join(new_job_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = {new_job_id()[-17:] for _ in range(50)}
    with os.fdopen(read, "rb") as pipe:
        child = {text[-17:] for text in pipe.read().decode().split(",")}
    os.waitpid(pid, 0)
    assert len(child) == 50 and not parent & child

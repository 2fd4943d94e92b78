"""SQLite reads by id on the event loop: which slow reads send them to the threads."""

from __future__ import annotations

import time

from interop.app import InlineReads


def test_a_read_that_waited_while_the_process_computed_keeps_reads_on_the_loop() -> None:
    reads = InlineReads(True)
    started = time.perf_counter()
    cpu = time.process_time()
    while time.process_time() - cpu < 3 * InlineReads.SLOW:  # another thread's GIL turn
        pass
    ended = started + (time.process_time() - cpu)  # as long as the process computed
    reads.took(started, ended, cpu)
    assert reads.wanted(ended)


def test_a_read_that_waited_while_the_process_idled_sends_reads_to_the_threads() -> None:
    reads = InlineReads(True)
    started = time.perf_counter()
    cpu = time.process_time()
    time.sleep(3 * InlineReads.SLOW)  # the disk
    ended = time.perf_counter()
    reads.took(started, ended, cpu)
    assert not reads.wanted(ended)
    assert reads.wanted(ended + InlineReads.BACKOFF)


def test_a_fast_read_keeps_reads_on_the_loop() -> None:
    reads = InlineReads(True)
    now = time.perf_counter()
    reads.took(now, now + InlineReads.SLOW / 2, time.process_time())
    assert reads.wanted(now + InlineReads.SLOW)

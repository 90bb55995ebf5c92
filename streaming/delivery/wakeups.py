"""Wake-ups: Celery messages that ask a worker to drain lanes.

A message is only a wake-up: the database is the queue of record, so a lost message delays its
lanes until the sweeper's next pass and loses nothing. Ingest announces new work with the
``lanes_queued`` signal; ``wakeup_publisher`` takes it from there on a thread of its own, so
an ingest answer never waits for the broker (publishing was a large share of a web worker's CPU,
docs/benchmarks.md, and a slow broker would have slowed every answer).

Messages name the task (``switchboard.lanes_drain``) rather than import it: the tasks call the
sweeper, which wakes lanes, so an import would close a loop.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable

from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

LANES_DRAIN_TASK = "switchboard.lanes_drain"
# Lanes named by one wake-up message. A message is drained by one worker thread, lane after lane,
# so this trades web time (one publish per lane was most of a 100-user batch's answer) against
# parallelism and latency: a batch of 100 users is 10 messages, so up to 10 threads start on it
# at once, and a lane waits behind at most 9 others of its message. Later wake-ups and the
# sweeper still reach a lane that waits longer, because no worker holds it yet.
LANES_PER_WAKEUP = 10
# The publisher's pace (one publish per interval at most, per process).
WAKEUP_INTERVAL_SECONDS = 0.02


def lane_chunks(lane_ids: Iterable[int]) -> list[list[int]]:
    """The distinct lanes, sorted, cut into messages of at most ``LANES_PER_WAKEUP`` lanes."""
    lanes = sorted(set(lane_ids))
    return [lanes[i : i + LANES_PER_WAKEUP] for i in range(0, len(lanes), LANES_PER_WAKEUP)]


def lanes_wake(lane_ids: Iterable[int]) -> list[int]:
    """Ask the workers to drain these lanes, now, from the caller's thread.

    Never raises: it runs after a transaction committed, when the caller must answer "accepted"
    whatever the broker's state. A wake-up that cannot be published is logged and left to the
    sweeper. Returns the lanes whose wake-up was published (none when the broker refused: some
    may have gone out, and waking a lane twice is harmless).
    """
    chunks = lane_chunks(lane_ids)
    if not chunks:
        return []
    app = current_app
    if app.conf.task_always_eager:
        # Eager tasks run inline, in the caller's thread and transaction.
        for chunk in chunks:
            app.tasks[LANES_DRAIN_TASK].apply((chunk,))
        return [lane_id for chunk in chunks for lane_id in chunk]
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    try:
        with app.producer_or_acquire() as producer, _publish_batch(producer):
            for chunk in chunks:
                # No publish retries: with the broker down, each would hold the caller for
                # seconds.
                app.send_task(
                    LANES_DRAIN_TASK,
                    (chunk,),
                    queue=queue,
                    retry=False,
                    producer=producer,
                    # What Celery would log, without its slower safe repr (a list of ints).
                    argsrepr=repr((chunk,)),
                )
    except Exception as exc:
        logger.warning(
            "broker unavailable, %d lane wake-ups left to the sweeper: %s",
            sum(len(chunk) for chunk in chunks),
            exc,
        )
        return []
    return [lane_id for chunk in chunks for lane_id in chunk]


def _publish_batch(producer: object) -> contextlib.AbstractContextManager[object]:
    # kombu >= 5.7 sends the messages of a batch to Redis in one pipelined round trip (one
    # round trip per wake-up instead of one per message); other brokers and older kombu
    # publish each message as it comes, which is just as correct.
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else contextlib.nullcontext()


class WakeupPublisher:
    """Publishes wake-ups from one thread per process, coalescing concurrent ones.

    The thread publishes at most once per ``WAKEUP_INTERVAL_SECONDS``: the lanes of the requests
    answered meanwhile go out together, in as few messages as ``lane_chunks`` makes of them;
    after a quiet spell a lane goes out at once. Lanes still in hand when the process dies are
    found by the sweeper, like any lost wake-up; a graceful exit publishes them first.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child (a prefork pool, a preloading web server) has no thread: it starts its
        # own, with nothing of the parent's in hand.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._pending: set[int] = set()
        self._publishing = False
        self._thread: threading.Thread | None = None
        self._published_at = -1e9

    def submit(self, lane_ids: Iterable[int]) -> None:
        lanes = set(lane_ids)
        if not lanes:
            return
        if current_app.conf.task_always_eager:
            lanes_wake(lanes)
            return
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="switchboard-wakeups", daemon=True
                )
                self._thread.start()
            self._pending |= lanes
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every lane handed over is published; False if ``timeout`` ran out first."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._pending and not self._publishing, timeout
            )

    def _run(self) -> None:
        while True:
            # At most one publish per interval: under load the lanes of an interval's requests
            # gather into one; the first wake-up after a quiet spell goes out at once.
            time.sleep(max(0.0, self._published_at + WAKEUP_INTERVAL_SECONDS - time.monotonic()))
            with self._changed:
                self._changed.wait_for(lambda: self._pending)
                lanes, self._pending = self._pending, set()
                self._publishing = True
            self._published_at = time.monotonic()
            try:
                lanes_wake(lanes)
            except Exception:
                # lanes_wake logs the broker's refusals itself; whatever else went wrong must not
                # end the thread. The lanes are left to the sweeper.
                logger.exception("%d lane wake-ups left to the sweeper", len(lanes))
            finally:
                with self._changed:
                    self._publishing = False
                    self._changed.notify_all()


wakeup_publisher = WakeupPublisher()
atexit.register(wakeup_publisher.flush, 2.0)


def lanes_wake_soon(lane_ids: Iterable[int]) -> None:
    """Ask the workers to drain these lanes, from the publishing thread (never blocks on the
    broker). Call it after commit."""
    wakeup_publisher.submit(lane_ids)

"""The baseline a Django team would otherwise write: one Celery task per event posting to
Intercom with requests. No lanes (any order), no limiter (429s are retried like any error),
no attempt log; retries follow Celery's documented pattern (``autoretry_for`` with exponential
backoff, 5 retries, then the event is dropped).

It is its own Celery app so that a worker can run it without Switchboard:

    CELERY_BROKER_URL=redis://127.0.0.1:6379/8 celery -A bench.baseline_naive worker -Q sb-bench-naive

``naive_enqueue`` publishes the calls; B3 and B5 measure it in the same runs as Switchboard.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import requests
from celery import Celery

QUEUE = "sb-bench-naive"

app = Celery(
    "baseline_naive", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/8")
)
app.conf.task_default_queue = QUEUE
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True

_session = requests.Session()


@app.task(
    name="baseline.send_to_intercom",
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def send_to_intercom(base_url: str, token: str, call: dict[str, Any]) -> None:
    headers = {
        "Authorization": f"Bearer {token}",
        "Intercom-Version": "2.11",
        "Accept": "application/json",
    }
    if call["type"] == "identify":
        body = {"role": "user", "external_id": call["userId"], **call.get("traits", {})}
        response = _session.post(f"{base_url}/contacts", json=body, headers=headers, timeout=20)
        if response.status_code == 409:  # already there: good enough for the naive version
            return
    else:
        body = {
            "event_name": call["event"],
            "created_at": call["created_at"],
            "user_id": call["userId"],
            "metadata": call.get("properties", {}),
        }
        response = _session.post(f"{base_url}/events", json=body, headers=headers, timeout=20)
    response.raise_for_status()


def naive_enqueue(*, base_url: str, token: str, calls: Iterable[dict[str, Any]]) -> int:
    """One task per call, as a post_save signal or a view would queue them."""
    count = 0
    with app.producer_or_acquire() as producer:
        for call in calls:
            send_to_intercom.apply_async((base_url, token, call), producer=producer, queue=QUEUE)
            count += 1
    return count

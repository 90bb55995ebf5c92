"""Ingest under contention: SDKs resending the same batch at once, in another order each time.

8 clients POST /v1/batch at the same moment, each with the same 300 calls (one messageId each,
40 users) shuffled differently; repeated for 20 rounds, through gunicorn. Before the ingest's
lock order was fixed, 5 of 8 answered a 500 page after "deadlock detected". Reported: every
status code seen, the answer times (p50/p99), events stored (must be 300 a round), retries
logged by the web workers.

    .venv/bin/python bench/ingest_contention.py [--rounds 20] [--clients 8] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    Stack,
    basic_auth,
    percentile,
    result_write,
    switchboard_setup,
    table_print,
)

NAME = "ingest_contention"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    setup = switchboard_setup(sandbox_url="http://127.0.0.1:9")  # no worker: ingest only
    web = stack.gunicorn_start(workers=3, threads=4)
    headers = {"Authorization": basic_auth(setup.write_key), "Content-Type": "application/json"}
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=args.clients))

    from streaming.models import Event

    statuses: Counter[int] = Counter()
    times_ms: list[float] = []
    stored_per_round: list[int] = []
    shuffler = random.Random(1)
    for round_number in range(rounds):
        tag = uuid.uuid4().hex[:8]
        calls = [
            {
                "type": "track",
                "userId": f"user-{i % 40}",
                "event": "Seen",
                "messageId": f"{tag}-{i}",
            }
            for i in range(args.calls)
        ]
        bodies = []
        for _ in range(args.clients):
            batch = calls[:]
            shuffler.shuffle(batch)
            bodies.append(json.dumps({"batch": batch}).encode())

        def send(body: bytes) -> tuple[int, float]:
            started = time.perf_counter()
            answer = session.post(f"{web.url}/v1/batch", data=body, headers=headers, timeout=120)
            return answer.status_code, (time.perf_counter() - started) * 1000

        with ThreadPoolExecutor(args.clients) as pool:
            for status, elapsed in pool.map(send, bodies):
                statuses[status] += 1
                times_ms.append(elapsed)
        stored_per_round.append(Event.objects.filter(message_id__startswith=f"{tag}-").count())
        print(f"  round {round_number + 1}: {dict(statuses)}", flush=True)

    # Retries the web workers logged ("ingest deadlock" before the lock order was fixed).
    retries = sum(
        "ingest contention" in line or "ingest deadlock" in line
        for line in web.log.read_text(errors="replace").splitlines()
    )
    figures = {
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests": sum(statuses.values()),
        "only_200": set(statuses) == {200},
        "p50_ms": round(percentile(times_ms, 0.5), 1),
        "p99_ms": round(percentile(times_ms, 0.99), 1),
        "max_ms": round(max(times_ms), 1),
        "stored_per_round": sorted(set(stored_per_round)),
        "contention_retries_logged": retries,
    }
    table_print(
        f"Ingest contention ({rounds} rounds x {args.clients} parallel batches of the same "
        f"{args.calls} messageIds, shuffled)",
        ["statuses", "p50 ms", "p99 ms", "max ms", "events stored / round", "retries"],
        [
            [
                figures["statuses"],
                figures["p50_ms"],
                figures["p99_ms"],
                figures["max_ms"],
                figures["stored_per_round"],
                retries,
            ]
        ],
    )
    result_write(
        NAME,
        quick=args.quick,
        config={"rounds": rounds, "clients": args.clients, "calls": args.calls},
        figures=figures,
    )


if __name__ == "__main__":
    main()

"""B6: what an identify costs in Intercom calls (and in database queries), cold and warm.

Identifies go through the real ingest service and the real lane drain (in this process) into
the sandbox; the calls are counted from the sandbox's request log, the queries with Django's
query capture. Cases: a new user (cold: not in Intercom), a user Intercom has but we have no
ContactLink for (cold cache), the same users again with a changed trait (warm cache) and with
nothing changed (warm, unchanged). Target: a warm identify <= 1.1 calls.

    .venv/bin/python bench/b6_identify_cost.py [--quick] [--users N]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Stack, result_write, switchboard_setup, table_print  # noqa: E402

NAME = "b6_identify_cost"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=None)
    args = parser.parse_args()
    users_count = args.users or (20 if args.quick else 100)

    stack = Stack(NAME)
    stack.database_reset()
    stack.redis_flush()
    stack.django()
    sandbox = stack.sandbox_start()
    setup = switchboard_setup(sandbox_url=sandbox.url)

    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from integrations.models import Source
    from streaming.delivery.lanes import lane_drain
    from streaming.ingest.events import events_ingest
    from streaming.ingest.segment import call_normalise
    from streaming.models import Delivery

    source = Source.objects.get(pk=setup.source_id)
    tag = uuid.uuid4().hex[:6]
    new_users = [f"{tag}-new-{i}" for i in range(users_count)]
    known_users = [f"{tag}-known-{i}" for i in range(users_count)]
    sandbox.contacts_create(known_users)

    def run(calls: list[dict]) -> dict:
        seq = max([e["seq"] for e in sandbox.requests(0)] or [0])
        now = timezone.now()
        normalised = [
            call_normalise({"messageId": uuid.uuid4().hex, **c}, call_type=None, received_at=now)
            for c in calls
        ]
        result = events_ingest(source=source, calls=normalised, received_at=now)
        lanes = sorted(
            set(
                Delivery.objects.filter(event_id__in=result.event_ids).values_list(
                    "lane_id", flat=True
                )
            )
        )
        reset_queries()  # the query log keeps 9,000 entries: count from an empty one
        with CaptureQueriesContext(connection) as queries:
            for lane_id in lanes:
                lane_drain(lane_id=lane_id)
        requests = [e for e in sandbox.requests(seq) if not e["path"].startswith("/_sandbox")]
        statuses = dict(
            Delivery.objects.filter(event_id__in=result.event_ids)
            .values_list("status")
            .annotate(n=__import__("django.db.models", fromlist=["Count"]).Count("id"))
        )
        by_request: dict[str, int] = {}
        for e in requests:
            key = f"{e['method']} {'/contacts/{id}' if e['path'].count('/') == 2 and e['path'].startswith('/contacts/') else e['path'].split('/find_by_external_id')[0] + ('/find_by_external_id' if 'find_by' in e['path'] else '')}"
            by_request[key] = by_request.get(key, 0) + 1
        kinds: dict[str, int] = {}
        for query in queries.captured_queries:
            sql = query["sql"]
            verb = sql.split(None, 1)[0].upper()
            table = next(
                (
                    w.strip('"')
                    for w in sql.replace("(", " ").split()
                    if w.strip('"').startswith(("streaming_", "integrations_"))
                ),
                "",
            )
            kinds[f"{verb} {table}"] = kinds.get(f"{verb} {table}", 0) + 1
        return {
            "query_kinds_per_call": {
                k: round(v / len(calls), 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
            },
            "identifies": len(calls),
            "calls": len(requests),
            "calls_per_identify": round(len(requests) / len(calls), 3),
            "queries_per_identify": round(len(queries) / len(calls), 1),
            "requests": by_request,
            "deliveries": statuses,
        }

    def identify(user: str, version: str) -> dict:
        # The name is a standard contact field every sync sends: changing it is a real change.
        return {
            "type": "identify",
            "userId": user,
            "traits": {"email": f"{user}@example.com", "name": f"User {user} {version}"},
        }

    cases = {
        "cold, new contact": run([identify(u, "v1") for u in new_users]),
        "cold cache, contact exists": run([identify(u, "v1") for u in known_users]),
        "warm, a trait changed": run([identify(u, "v2") for u in new_users + known_users]),
        "warm, nothing changed": run([identify(u, "v2") for u in new_users + known_users]),
    }
    # A track of a known user, for the per-delivery query cost B3 pays.
    cases["track (for comparison)"] = run(
        [
            {"type": "track", "userId": u, "event": "Bench Event", "properties": {"n": 1}}
            for u in known_users
        ]
    )
    # Ten tracks of one user: one lane drained once, so the per-delivery cost without the claim.
    cases["10 tracks in one lane (per track)"] = run(
        [
            {
                "type": "track",
                "userId": known_users[0],
                "event": "Bench Event",
                "properties": {"n": i},
            }
            for i in range(10)
        ]
    )
    warm_changed = cases["warm, a trait changed"]["calls_per_identify"]
    figures = {
        "cases": cases,
        "warm_calls_per_identify": warm_changed,
        "target": "warm identify <= 1.1 Intercom calls",
        "met": warm_changed <= 1.1,
    }
    table_print(
        f"B6 identify cost ({users_count} users a case; default sync)",
        ["case", "Intercom calls per call", "DB queries per call", "requests"],
        [
            [
                name,
                c["calls_per_identify"],
                c["queries_per_identify"],
                ", ".join(f"{k} x{v}" for k, v in c["requests"].items()),
            ]
            for name, c in cases.items()
        ],
    )
    result_write(NAME, quick=args.quick, config={"users": users_count}, figures=figures)


if __name__ == "__main__":
    main()

"""B7: delivery when every user has one event (a backfill of existing users, a campaign burst).

B3's measurement with one track per user, so every lane holds a single delivery and pays the
whole claim, lease and wake-up cost for one Intercom call; the bare loop and the naive baseline
run in the same shape in the same run. Workers as docs/production.md says (2 processes, threads,
32 each). Targets: >= 400 Intercom calls/s and >= 0.5 of the bare loop.

    .venv/bin/python bench/b7_one_event_per_user.py [--quick] [--repeats N] [--profile]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.b3_delivery import main  # noqa: E402

if __name__ == "__main__":
    main([*sys.argv[1:], "--events-per-user", "1", "--name", "b7_one_event_per_user"])

"""B8: B7 with the workers started as a Celery user types them: ``celery -A config worker``,
no pool and no concurrency flag, so the settings' defaults decide (SWITCHBOARD_WORKER_POOL,
SWITCHBOARD_WORKER_CONCURRENCY). Target: within 10 % of B7.

    .venv/bin/python bench/b8_worker_defaults.py [--quick] [--repeats N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.b3_delivery import main  # noqa: E402

if __name__ == "__main__":
    main(
        [
            *sys.argv[1:],
            "--events-per-user",
            "1",
            "--worker-defaults",
            "--no-naive",
            "--name",
            "b8_worker_defaults",
        ]
    )

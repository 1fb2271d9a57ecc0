"""One heartbeat's own CPU: the product's per-credential step run serially, in one thread.

Run as ``python -m bench.serial`` with the bench's environment, against the fake Google with no
latency (``make bench`` sets that up): every credential is made due, the first 20 warm the process
(connections, caches), then each of the rest is refreshed and probed by
:func:`oauth.sweep._heartbeat_outcome`, exactly as a sweep's thread does. Prints one JSON line:
CPU ms per credential (``time.process_time``) and wall ms per credential. With no other thread and
no waiting on Google, this is the floor of the product's own path, beside which the threaded
sweep's figure shows what the threads cost.
"""
from __future__ import annotations

import cProfile
import json
import os
import time

WARM = 20


def main() -> None:
    import django

    django.setup()
    from django.utils import timezone

    from oauth.models import GoogleCredential
    from oauth.sweep import _heartbeat_outcome

    GoogleCredential.objects.update(
        last_refreshed_at=None, last_used_at=None, access_token=None, access_token_expires_at=None
    )
    ids = list(GoogleCredential.objects.order_by("pk").values_list("pk", flat=True))
    now = timezone.now()
    outcomes = [_heartbeat_outcome(credential_id=pk, actor="process:bench", not_before=now)
                for pk in ids[:WARM]]
    measured = ids[WARM:]
    profile = os.environ.get("BENCH_SERIAL_PROFILE")  # a file: cProfile the measured heartbeats
    profiler = cProfile.Profile(time.process_time) if profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    outcomes += [_heartbeat_outcome(credential_id=pk, actor="process:bench", not_before=now)
                 for pk in measured]
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({
        "credentials": len(measured),
        "cpu_ms_per_credential": cpu / len(measured) * 1000,
        "wall_ms_per_credential": wall / len(measured) * 1000,
        "all_connected": outcomes.count("connected") == len(ids),
    }), flush=True)


if __name__ == "__main__":
    main()

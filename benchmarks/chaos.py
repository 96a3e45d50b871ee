"""Chaos, bigger than the test: jobs run by real API and worker processes on a private
PostgreSQL server while workers are kill -9ed, PostgreSQL is restarted and an API process is
kill -9ed mid-upload — and what came out of it.

    python -m benchmarks.chaos                  # 96 sweep points + 80 plain jobs, ~25 kills
    python -m benchmarks.chaos --quick          # the test's plan (60 + 40, 8 kills)
    python -m benchmarks.chaos --json chaos.json

The run is :func:`tests.support.chaos.run_chaos` (``tests/faults/test_chaos.py`` runs the
quick plan), judged by :func:`tests.support.chaos_checks.judge`. The server is made for the
run with ``initdb`` in a temporary directory (PostgreSQL's ``initdb`` and ``pg_ctl`` must be
installed; as root they run as the ``postgres`` user) and removed afterwards.

Printed: the faults injected (worker kills, how many landed mid-job, the PostgreSQL outage,
the API process's downtime), the jobs and their statuses, the attempts (retries against the
interruptions that explain them), the histories identical to an undisturbed run, the answers
by status (and any that were not 2xx/4xx or a 503 with ``Retry-After``), the connection
failures (to the dead API process, which the clients failed over from), storage problems,
the wall time and the machine. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks import machine
from tests.support.chaos import ChaosPlan, run_chaos
from tests.support.chaos_checks import Verdict, judge, summary
from tests.support.databases import engine_on
from tests.support.private_postgres import SERVER_USER, PrivatePostgres, postgres_bindir
from tests.support.processes import find_free_port

BIG = ChaosPlan(
    batch_sizes=(4, 8, 16, 32, 64, 128, 256, 512),
    learning_rates=(0.01, 0.03),
    seeds=6,
    plain_jobs=80,
    plain_configs=8,
    epochs=16,
    rows=1024,
    max_kills=25,
    kill_every_s=2.5,
    timeout_s=900.0,
)
QUICK = ChaosPlan()


@contextmanager
def private_server() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the run's own, removed at the end."""
    bindir = postgres_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (initdb, pg_ctl) found")
    root = Path(tempfile.mkdtemp(prefix="batchwise-chaos-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        owner = pwd.getpwnam(SERVER_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = [shutil.which("runuser") or "runuser", "-u", SERVER_USER, "--"]
    server = PrivatePostgres(bindir=bindir, root=root, port=find_free_port(), run_as=run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine slows every figure."""
    return ", ".join(f"{load:.1f}" for load in os.getloadavg()) + " (1, 5, 15 min)"


def failed_checks(verdict: Verdict) -> list[str]:
    """The checks that found something, by name."""
    problems = (
        "not_succeeded",
        "duplicates",
        "history_mismatches",
        "attempt_problems",
        "unacceptable",
        "stray_503",
        "stray_failures",
        "storage_problems",
    )
    return [name for name in problems if getattr(verdict, name)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the test's plan (60 + 40 jobs)")
    parser.add_argument("--seed", type=int, default=0, help="the fault schedule's RNG seed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(QUICK if args.quick else BIG, seed=args.seed)
    print(
        f"chaos: {plan.sweep_jobs} sweep points + {plan.plain_jobs} plain jobs, {plan.epochs} "
        f"epochs each; {plan.workers} workers, {plan.api_processes} API processes; lease "
        f"{plan.lease_s:g} s; a kill every ~{plan.kill_every_s:g} s (at most {plan.max_kills})"
    )
    print(f"load average at start: {load_average()}")
    with private_server() as server, tempfile.TemporaryDirectory() as scratch:
        url = server.create_database("chaos")
        with engine_on(url) as engine:
            run = run_chaos(plan, server, url, engine, Path(scratch))
            verdict = judge(engine, run)
    for line in summary(run, verdict):
        print(line)
    failed = failed_checks(verdict)
    print(f"checks failed: {', '.join(failed) or 'none'}")
    for name in failed:
        for problem in getattr(verdict, name)[:5]:
            print(f"  {name}: {problem}")
    print(f"load average at the end: {load_average()}")
    machine.print_machine()
    if args.json:
        figures = {
            "plan": dataclasses.asdict(plan),
            "summary": summary(run, verdict),
            "kills": len(run.kills),
            "kills_mid_job": sum(kill.mid_job for kill in run.kills),
            "pg_outages_s": [o.up - o.down for o in run.pg_outages],
            "api_downtime_s": [k.window.up - k.window.down for k in run.api_kills],
            "jobs": verdict.jobs,
            "statuses": dict(verdict.statuses),
            "attempts": {str(a): n for a, n in verdict.attempts.items()},
            "retries": verdict.extra_attempts,
            "identical_histories": verdict.identical_histories,
            "answers_by_status": {str(s): n for s, n in verdict.answers_by_status.items()},
            "connection_failures": verdict.connection_failures,
            "failed_checks": failed,
            "wall_s": run.wall_s,
            "machine": machine.describe(),
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

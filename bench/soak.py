"""The soak: commands and faults together for a while, then nothing may be lost.

    python -m bench.soak [--seed N] [--duration S] [--commands N] [--faults N] [--workers 1,2,4]

Seeded, bounded, loopback only. The sample mesh plus generated services (each with its
VirtualService, DestinationRule and ready pods), a private Redis with AOF, the Kubernetes
emulator, the Slack stand-in, the traffic generator and a real Prometheus, one real
``meshbot serve`` and three ``meshbot worker`` processes. Operators send signed slash commands
(canary, moves of a running canary, rollout, promote, rollback, abort, header routes and
mirrors on and off, Slack retries, some from people not allowed to); approvers answer approval
requests with signed ``reaction_added`` events. Meanwhile faults strike at random: a worker
SIGKILLed (a replacement started; one is always killed half-way), Redis restarted (AOF),
Kubernetes 409 / 5xx / stalls / a write's answer lost after it landed, Slack 429 / 5xx,
Prometheus stopped and started. Then it waits for quiet
(with a deadline) and checks:

- every acked command ended: run exactly once, or answered with a reason;
- every VirtualService's weights match its rollout's final phase;
- no header route or mirror left on a service whose last command on its routes was a rollback;
- every mutation audited exactly once (commands, and the analysis's own advances/rollbacks);
- no rollout stuck (each ended, ready to promote, or checked in its last two intervals), none
  judged twice in one tick;
- no Traceback in any process log.

It prints the figures (faults by kind, commands carried out per second, memory of serve and
the workers) and every violation, and exits 1 when there is one. ``--workers 1,2,4`` runs a
shorter scenario for each worker count instead and prints each one's throughput.
``--allow KIND`` reports violations of a known kind without failing on them.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._soak_faults import KINDS
from bench._soak_run import Plan, Result, run


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items(), key=lambda kv: -kv[1])) \
        or "none"


def report(result: Result, allowed: frozenset[str]) -> int:
    """Print one scenario's figures and violations; how many violations count."""
    p = result.plan
    print(f"soak: seed {p.seed}, {p.duration:g} s of load, {p.workers} workers, "
          f"{p.extra_services} extra services, faults of kinds {', '.join(p.kinds)}")
    print(f"commands: {result.sent} sent, {result.acked} acked (HTTP 200); how they ended: "
          f"{_counts(result.ends)}")
    print(f"faults injected: {sum(result.faults.values())} — {_counts(result.faults)}")
    print(f"approvals: {result.reactions} reactions sent; RQ's worker loop lost Redis "
          f"{result.redis_losses} times (one warning line each; a new worker took over)")
    print(f"rollouts: {result.rollouts_seen} seen; final phases {_counts(result.phases)}; "
          f"{result.judgements} analysis checks; {result.automatic} changes by the analysis")
    print(f"routes: {result.routes_checked} services whose last command on their routes was a "
          "rollback that ran, each checked for a header route or mirror left")
    rate = result.carried_out / result.elapsed if result.elapsed else 0.0
    load_s = result.load_window[1] - result.load_window[0]
    print(f"carried out: {result.carried_out} commands in {result.elapsed:.1f} s "
          f"(quiet {result.quiet_after:.1f} s after the load) = {rate:.2f} commands/s; "
          f"during the load {result.ended_in_load} accepted commands ended in {load_s:.1f} s = "
          f"{result.ended_in_load / load_s if load_s else 0.0:.2f}/s")
    met = "met" if all(v <= 100 for v in result.rss.values()) else "NOT met"
    print("memory (VmRSS): " + ", ".join(f"{k} {v:.1f} MB" for k, v in result.rss.items())
          + f"  (aim <= 100 MB each: {met})")
    counted = [(k, t) for k, t in result.violations.lines if k not in allowed]
    known = [(k, t) for k, t in result.violations.lines if k in allowed]
    print(f"violations: {len(counted)}" + (f" (+{len(known)} of allowed kinds "
                                           f"{', '.join(sorted(allowed))})" if known else ""))
    for kind, text in counted + known:
        print(f"  [{kind}{' (allowed)' if kind in allowed else ''}] {text}")
    if result.logs_dir:
        print(f"logs kept in {result.logs_dir}")
    return len(counted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--commands", type=int, default=None,
                        help="commands sent (default: one a second)")
    parser.add_argument("--faults", type=int, default=None,
                        help="faults struck (default: one per 5 s)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker counts: one shorter run each")
    parser.add_argument("--services", type=int, default=40, help="generated extra services")
    parser.add_argument("--kinds", default=",".join(KINDS), help="fault kinds to strike")
    parser.add_argument("--allow", action="append", default=[],
                        help="a violation kind reported but not failed on (repeatable)")
    parser.add_argument("--quiet-deadline", type=float, default=None,
                        help="how long to wait for quiet after the load (s)")
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy every process's log into this directory")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if args.duration <= 0 or any(k not in KINDS for k in kinds):
        parser.error(f"need --duration > 0 and --kinds among {', '.join(KINDS)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    counts = [int(n) for n in args.workers.split(",")] if args.workers else [3]
    duration = args.duration / len(counts) if args.workers else args.duration
    # One command a second; with --workers, three a second, to see what more workers carry.
    commands = args.commands if args.commands is not None else \
        int(duration * (3 if args.workers else 1))
    faults = args.faults if args.faults is not None else int(duration / 5)
    quiet = args.quiet_deadline or max(90.0, duration / 4)
    allowed = frozenset(args.allow)
    failing = 0
    rows = []
    for workers in counts:
        plan = Plan(seed=seed, duration=duration, commands=commands, faults=faults,
                    workers=workers, extra_services=args.services, kinds=kinds,
                    quiet_deadline=quiet)
        logs = args.keep_logs / f"workers-{workers}" if args.keep_logs else None
        result = run(plan, logs)
        bad = report(result, allowed)
        failing += bad
        rate = result.carried_out / result.elapsed if result.elapsed else 0.0
        load_s = result.load_window[1] - result.load_window[0]
        rows.append(f"  {workers} worker(s): {result.carried_out} carried out in "
                    f"{result.elapsed:.1f} s = {rate:.2f} commands/s; accepted ones ended during "
                    f"the load {result.ended_in_load / load_s if load_s else 0.0:.2f}/s; "
                    f"violations {bad}")
        print()
    if args.workers:
        print("by worker count:")
        print("\n".join(rows))
    replay = list(sys.argv[1:] if argv is None else argv)
    if args.seed is None:
        replay = ["--seed", str(seed), *replay]
    print(f"seed {seed}: {'FAILED' if failing else 'passed'} with {failing} violations "
          f"(replay: python -m bench.soak {' '.join(replay)})")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())

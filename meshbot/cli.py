"""The ``meshbot`` command line (a contract operators script against: keep its verbs and flags).

Each sub-command imports only what it needs, so ``meshbot policy check`` starts fast and the
bot's process never loads the Kubernetes client.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from bot.server import serve

    serve(host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def _socket(args: argparse.Namespace) -> int:
    from bot.socket_mode import run_socket_mode

    run_socket_mode(metrics_port=args.metrics_port)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from jobs.runtime.worker import run_worker

    return run_worker(burst=args.burst, metrics_port=args.metrics_port)


def _policy_check(args: argparse.Namespace) -> int:
    from policies.loader import check_policy_file

    problems = check_policy_file(Path(args.file))
    if not problems:
        print(f"{args.file}: valid")
        return 0
    print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def _policy_schema(_args: argparse.Namespace) -> int:
    from policies.loader import policy_json_schema

    print(json.dumps(policy_json_schema(), indent=2, sort_keys=True))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from jobs.runtime.shell import rollback_from_shell

    return rollback_from_shell(args.service, actor=args.actor, reason=args.reason)


def _demo(args: argparse.Namespace) -> int:
    try:
        from playground.demo import run_demo
        from playground.web.server import run_page
    except ImportError as exc:
        print("meshbot demo needs the playground, which this installation does not have "
              f"({exc}). From a checkout: pip install -e '.[playground]' (or `make demo`).",
              file=sys.stderr)
        return 2

    if args.script:
        return run_demo(workdir=Path(args.workdir))
    return run_page(workdir=Path(args.workdir), port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshbot", description="Slack ChatOps for an Istio service mesh."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="HTTP mode: Slack events, Alertmanager, health, metrics")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    # Measured with bench/ack_latency on 2 cores: 4 processes x 4 threads gave the lowest p99
    # for a burst of 50 commands (more threads per process only queue behind the GIL).
    serve.add_argument("--workers", type=int, default=4, help="server processes")
    serve.add_argument("--threads", type=int, default=4, help="threads per process")
    serve.set_defaults(run=_serve)

    socket = sub.add_parser("socket", help="Socket Mode: no public URL needed")
    socket.add_argument("--metrics-port", type=int, default=9100,
                        help="port for /healthz, /readyz and /metrics")
    socket.set_defaults(run=_socket)

    worker = sub.add_parser(
        "worker", help="an RQ worker with meshbot's ticker (analysis, scheduled jobs)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics on this port")
    worker.set_defaults(run=_worker)

    policy = sub.add_parser("policy", help="policy file tools")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = policy_sub.add_parser("check", help="validate a policy file (exit 0 valid, 1 not)")
    check.add_argument("file")
    check.set_defaults(run=_policy_check)
    schema = policy_sub.add_parser("schema", help="print the policy's JSON Schema")
    schema.set_defaults(run=_policy_schema)

    rollback = sub.add_parser(
        "rollback", help="roll a service back to 100%% stable from a shell (when Slack is down)"
    )
    rollback.add_argument("service")
    rollback.add_argument("--actor", default="shell", help="who is rolling back, for the audit")
    rollback.add_argument("--reason", default="rollback from the command line")
    rollback.set_defaults(run=_rollback)

    demo = sub.add_parser(
        "demo", help="the local playground as a page on loopback (no Slack, no cluster needed)")
    demo.add_argument("--workdir", default=".demo", help="where the demo keeps its files")
    demo.add_argument("--script", action="store_true",
                      help="play a scripted session in the terminal instead, then exit")
    demo.add_argument("--port", type=int, default=8765,
                      help="the page's loopback port (0: any free one)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

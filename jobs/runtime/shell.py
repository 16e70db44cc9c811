"""``meshbot rollback <service>`` from a shell: the same rollback as from Slack, audited.

For when Slack is down (e.g. ``kubectl exec`` into a meshbot pod). It needs Redis and the
Kubernetes API; Slack is told if it answers, and its silence does not stop the rollback.
"""

from __future__ import annotations

import getpass
import sys
import time
import uuid

from jobs.runtime import context
from jobs.runtime.handlers.traffic import rollback
from meshbot.commands import Command, Request, Verb
from meshbot.errors import MeshbotError


def rollback_from_shell(service: str, *, actor: str, reason: str) -> int:
    ctx = context.current()
    view = ctx.policy.service(service)
    if view is None:
        known = ", ".join(ctx.policy.service_names)
        print(f"unknown service {service!r}; the policy knows: {known}", file=sys.stderr)
        return 1
    channel = view.channel or next(iter(ctx.policy.channels), "")
    who = actor if actor != "shell" else f"shell:{getpass.getuser()}"
    request = Request(id=f"shell-{uuid.uuid4().hex}", command=Command(verb=Verb.ROLLBACK,
                      target=service), user=who, channel=channel, received_at=time.time())
    try:
        result = rollback(ctx, request)
    except MeshbotError as exc:
        print(f"rollback of {service} failed: {exc.message}", file=sys.stderr)
        return 1
    print(f"rolled back {result} ({reason})")
    return 0

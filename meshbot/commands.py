"""Typed commands: what the grammar produces, the policy judges and the jobs carry out.

A ``Command`` is a frozen, JSON-safe value; it travels to workers as ``model_dump(mode="json")``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

from pydantic import BaseModel, ConfigDict, Field

ServiceName = NewType("ServiceName", str)


class Verb(StrEnum):
    HELP = "help"
    STATUS = "status"
    CANARY = "canary"
    ROLLOUT = "rollout"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    AUDIT = "audit"
    LOCKS = "locks"
    UNLOCK = "unlock"
    FREEZE = "freeze"
    AB = "ab"
    MIRROR = "mirror"
    BLUEGREEN = "bluegreen"
    INJECT = "inject"
    INJECT_NAMESPACE = "inject-namespace"
    MTLS = "mtls"
    BACKUP = "backup"
    BACKUPS = "backups"
    RESTORE = "restore"
    EMERGENCY = "emergency"
    READINESS = "readiness"
    MIGRATE = "migrate"
    AUTHZ = "authz"


class TargetKind(StrEnum):
    NONE = "none"
    SERVICE = "service"
    NAMESPACE = "namespace"
    BACKUP = "backup"


class Command(BaseModel):
    """One parsed ``/mesh`` command. Fields a verb does not use stay ``None``/empty."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verb: Verb
    target: str | None = None
    percent: int | None = Field(default=None, ge=0, le=100)
    steps: tuple[int, ...] | None = None
    interval_s: float | None = None
    switch: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    # Show what would be written, write nothing: no lock, no approval, no freeze.
    dry_run: bool = False
    # Which of the policy's clusters (None: the only one). The gate fills it in when the target
    # runs in one cluster; a target in several needs ``cluster=``.
    cluster: str | None = None

    @property
    def service(self) -> ServiceName | None:
        return ServiceName(self.target) if self.target is not None else None


class Request(BaseModel):
    """A command as it travels from the bot to a worker: who asked, where, and the reply path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str  # the Slack trigger_id (commands) or event_id (events): the idempotency key
    command: Command
    user: str
    channel: str
    response_url: str | None = None
    received_at: float = 0.0
    approvals_required: int = 0
    eligible_approvers: tuple[str, ...] = ()  # user and group IDs the policy lets approve
    approved_by: tuple[str, ...] = ()
    # The order in which meshbot accepted requests (one Redis counter for every bot process):
    # a change accepted before a rollback of its service never takes effect after it.
    sequence: int = 0

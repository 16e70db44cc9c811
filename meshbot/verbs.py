"""The verb registry: every ``/mesh`` verb declared once.

Each entry says how the grammar reads the verb (usage, target kind, argument shape), which policy
permission it needs, what approval kind applies, whether it changes the mesh (the freeze refuses
it), whether it holds its service's lock while it runs, whether it is urgent (its own queue,
drained first) or always wins (never blocked by a lock or the freeze), and which job function
carries it out. The grammar, the policy decision, the queue, the gates and the task dispatch all
read this table; adding a verb means an entry here, its handler and its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshbot.commands import Command, TargetKind, Verb


class Args(StrEnum):
    """The shape of what follows the target; the grammar has one parser per shape."""

    NONE = "none"
    PERCENT = "percent"  # canary <service> <percent>
    ROLLOUT = "rollout"  # steps=… interval=…
    COUNT = "count"  # audit <service> [n]
    SWITCH = "switch"  # one word of ``VerbSpec.switches``
    RESTORE = "restore"  # nothing beyond the backup id (and dry-run, as for every change)
    HEADER = "header"  # ab: header=<name>:<value> | off
    MIRROR = "mirror"  # <percent>|off [confirm=yes]
    MIGRATE = "migrate"  # [phase=1..5|all] [force=yes] | pause | resume | abort
    AUTHZ = "authz"  # deny-all | allow from=… to=… | list | remove <name>


class ApprovalKind(StrEnum):
    """Which of the policy's approval counts a verb needs (``policies.decide`` reads them)."""

    NONE = "none"
    TIER_PROMOTE = "tier_promote"  # the service tier's promote count
    TIER_WEIGHT = "tier_weight"  # promote count above the tier's canary_above (or at 100)
    TIER_UNLOCK = "tier_unlock"
    NAMESPACE_EMERGENCY = "namespace_emergency"
    NAMESPACE_MTLS = "namespace_mtls"
    NAMESPACE_INJECT = "namespace_inject"
    NAMESPACE_RESTORE = "namespace_restore"
    NAMESPACE_AUTHZ = "namespace_authz"  # its AuthorizationPolicies (not to list them)
    FREEZE_OFF = "freeze_off"  # lifting the freeze, not setting it


@dataclass(frozen=True, slots=True)
class VerbSpec:
    verb: Verb
    usage: str  # what follows ``/mesh``
    target: TargetKind = TargetKind.SERVICE
    # Without a target the command covers every service (status, audit) or the policy's
    # default namespace (backup); the grammar still asks a service of status and audit.
    target_optional: bool = False
    args: Args = Args.NONE
    switches: tuple[str, ...] = ()
    # Switches that only read (authz list): no dry run, no approval, not refused by the freeze.
    read_only: tuple[str, ...] = ()
    # Switches that stop or undo work, so a change freeze lets them through (a migration's
    # pause and abort), while the rest of the verb waits for it to be lifted.
    freeze_exempt: tuple[str, ...] = ()
    approval: ApprovalKind = ApprovalKind.NONE
    changes_mesh: bool = False
    locks_service: bool = False
    urgent: bool = False
    wins: bool = False  # never blocked by a lock or the freeze (rollback wins)
    # Runs during a change freeze: incident work, which keeps its own approvals.
    during_freeze: bool = False
    handler: str | None = None  # "module:function" run by the worker; None: the bot answers

    @property
    def takes_dry_run(self) -> bool:
        """Every verb that changes the mesh (rollback and abort too) can show its plan first."""
        return self.changes_mesh or self.wins

    @property
    def full_usage(self) -> str:
        return f"{self.usage} [dry-run]" if self.takes_dry_run else self.usage

    @property
    def permission(self) -> str:
        """The key of ``permissions`` in the policy file."""
        return self.verb.value


_T = "jobs.runtime.handlers.traffic:"
_S = "jobs.runtime.handlers.sidecars:"
_R = "jobs.runtime.handlers.routing:"
_A = "jobs.runtime.handlers.admin:"
_B = "jobs.runtime.handlers.backup:"
_SVC = TargetKind.SERVICE
_NS = TargetKind.NAMESPACE
_NONE = TargetKind.NONE

REGISTRY: tuple[VerbSpec, ...] = (
    VerbSpec(Verb.HELP, "help", _NONE),
    VerbSpec(Verb.STATUS, "status <service>", _SVC, target_optional=True, handler=_T + "status"),
    VerbSpec(Verb.CANARY, "canary <service> <percent 0-100>", args=Args.PERCENT,
             approval=ApprovalKind.TIER_WEIGHT, changes_mesh=True, locks_service=True,
             handler="jobs.runtime.handlers.canary:canary"),
    VerbSpec(Verb.ROLLOUT, "rollout <service> [steps=5,10,25,50] [interval=30s]",
             args=Args.ROLLOUT, changes_mesh=True, locks_service=True, handler=_T + "rollout"),
    VerbSpec(Verb.PROMOTE, "promote <service>", approval=ApprovalKind.TIER_PROMOTE,
             changes_mesh=True, locks_service=True, handler=_T + "promote"),
    VerbSpec(Verb.ROLLBACK, "rollback <service>", urgent=True, wins=True,
             handler=_T + "rollback"),
    VerbSpec(Verb.PAUSE, "pause <service>", changes_mesh=True, locks_service=True,
             handler=_T + "pause_or_resume"),
    VerbSpec(Verb.RESUME, "resume <service>", changes_mesh=True, locks_service=True,
             handler=_T + "pause_or_resume"),
    VerbSpec(Verb.ABORT, "abort <service>", urgent=True, wins=True, handler=_T + "rollback"),
    VerbSpec(Verb.AUDIT, "audit <service> [n]", _SVC, target_optional=True, args=Args.COUNT,
             handler=_A + "audit"),
    VerbSpec(Verb.LOCKS, "locks", _NONE, handler=_A + "locks"),
    VerbSpec(Verb.UNLOCK, "unlock <service>", approval=ApprovalKind.TIER_UNLOCK,
             handler=_A + "unlock"),
    VerbSpec(Verb.FREEZE, "freeze on|off", _NONE, args=Args.SWITCH, switches=("on", "off"),
             approval=ApprovalKind.FREEZE_OFF, handler=_A + "freeze"),
    VerbSpec(Verb.AB, "ab <service> header=<name>:<value> | ab <service> off", args=Args.HEADER,
             changes_mesh=True, locks_service=True, handler=_R + "ab"),
    VerbSpec(Verb.MIRROR, "mirror <service> <percent 0-100>|off [confirm=yes]",
             args=Args.MIRROR, changes_mesh=True, locks_service=True, handler=_R + "mirror"),
    # Its start is judged as a canary at 10%; its cutover, which meshbot itself asks for
    # once the analysis is ready, needs the tier's promote approvals.
    VerbSpec(Verb.BLUEGREEN, "bluegreen <service>", approval=ApprovalKind.TIER_WEIGHT,
             changes_mesh=True, locks_service=True,
             handler="jobs.runtime.handlers.bluegreen:bluegreen"),
    VerbSpec(Verb.INJECT, "inject <service>", changes_mesh=True, locks_service=True,
             handler=_S + "inject"),
    VerbSpec(Verb.INJECT_NAMESPACE, "inject-namespace <namespace>", _NS,
             approval=ApprovalKind.NAMESPACE_INJECT, changes_mesh=True,
             handler=_S + "inject_namespace"),
    VerbSpec(Verb.MTLS, "mtls <namespace> strict|permissive", _NS, args=Args.SWITCH,
             switches=("strict", "permissive"), approval=ApprovalKind.NAMESPACE_MTLS,
             changes_mesh=True, handler=_S + "mtls"),
    VerbSpec(Verb.BACKUP, "backup [namespace]", _NS, target_optional=True,
             handler=_B + "backup"),
    VerbSpec(Verb.BACKUPS, "backups", _NONE, handler=_B + "backups"),
    VerbSpec(Verb.RESTORE, "restore <backup-id>", TargetKind.BACKUP,
             args=Args.RESTORE, approval=ApprovalKind.NAMESPACE_RESTORE, changes_mesh=True,
             handler=_B + "restore"),
    VerbSpec(Verb.EMERGENCY, "emergency <namespace>", _NS,
             approval=ApprovalKind.NAMESPACE_EMERGENCY, changes_mesh=True, urgent=True,
             during_freeze=True, handler="jobs.runtime.handlers.emergency:emergency"),
    VerbSpec(Verb.READINESS, "readiness", _NONE,
             handler="jobs.runtime.handlers.readiness:readiness"),
    # The steps that need approval ask for it when the workflow reaches them.
    VerbSpec(Verb.MIGRATE, "migrate <namespace> [phase=1..5|all] [force=yes] | migrate "
             "<namespace> pause|resume|abort", _NS, args=Args.MIGRATE,
             switches=("pause", "resume", "abort"), freeze_exempt=("pause", "abort"),
             changes_mesh=True, handler="jobs.runtime.handlers.migrate:migrate"),
    VerbSpec(Verb.AUTHZ, "authz <namespace> deny-all [confirm=yes] | allow "
             "from=<principal|namespace> to=<service> [methods=GET,POST] [paths=/api/*] "
             "[confirm=yes] | list | remove <name> [confirm=yes]", _NS, args=Args.AUTHZ,
             switches=("deny-all", "allow", "list", "remove"), read_only=("list",),
             approval=ApprovalKind.NAMESPACE_AUTHZ, changes_mesh=True,
             handler="jobs.runtime.handlers.authz:authz"),
)

VERBS: dict[Verb, VerbSpec] = {spec.verb: spec for spec in REGISTRY}


def spec(verb: Verb) -> VerbSpec:
    return VERBS[verb]


def changes(command: Command) -> bool:
    """Whether this command (not only its verb) changes the mesh: a read-only switch does not."""
    found = VERBS[command.verb]
    return found.changes_mesh and command.switch not in found.read_only


def verbs_where(**wanted: object) -> frozenset[Verb]:
    """The verbs whose spec has every given attribute value, e.g. ``verbs_where(urgent=True)``."""
    return frozenset(s.verb for s in REGISTRY
                     if all(getattr(s, key) == value for key, value in wanted.items()))

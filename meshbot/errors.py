"""meshbot's one exception root.

Nothing above an adapter sees a library exception: each adapter converts what its library raises
into one of these, keeping the original as ``__cause__``. The retry behaviour lives in the type,
and is mapped onto RQ's ``Retry`` in exactly one place (``jobs.retry``).

    MeshbotError                  every error carries ``message``, written for a person
    ├── UserError                 bad input or a refusal; changes nothing; shown to the caller
    │   ├── GrammarError          the command text does not parse
    │   └── Refused               the policy or the cluster's state says no
    ├── PolicyError               the policy file is invalid; ``problems`` name path and fix
    ├── PermanentError            retrying cannot help
    │   ├── MeshNotFound          the object meshbot needs does not exist
    │   ├── MeshForbidden         meshbot's Kubernetes role does not allow the call (HTTP 403)
    │   ├── MeshInvalid           the object exists but is not shaped as meshbot needs
    │   └── GitOpsOwned           a GitOps controller owns the object and would revert a change
    └── TemporaryError(delay)     retrying after ``delay`` seconds may succeed
        ├── MeshConflict          the object changed under us (HTTP 409 / stale resourceVersion)
        ├── MeshUnavailable       the Kubernetes API answered 5xx, timed out or refused
        ├── MetricsUnavailable    Prometheus could not be queried
        ├── SlackRateLimited      Slack answered 429; ``delay`` is its Retry-After
        └── QueueUnavailable      Redis (the queue and every store) did not answer
"""

from __future__ import annotations

from dataclasses import dataclass


class MeshbotError(Exception):
    """Root of every error meshbot raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(MeshbotError):
    """Bad input or a refusal: nothing changed, and the caller is told why."""


class GrammarError(UserError):
    """The command text does not parse."""


class Refused(UserError):
    """The policy or the state of the cluster refuses the request."""


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy file: where it is (dotted path), what is wrong, how to fix it."""

    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.problem} — {self.fix}"


class PolicyError(MeshbotError):
    """The policy file is invalid."""

    def __init__(self, problems: list[PolicyProblem], source: str = "policy") -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source} is invalid:\n{lines}")


class PermanentError(MeshbotError):
    """Retrying cannot help."""


class MeshNotFound(PermanentError):
    """The Kubernetes object meshbot needs does not exist."""


class MeshForbidden(PermanentError):
    """meshbot's own identity may not make this Kubernetes call (HTTP 403); the message names
    the verb and the resource, as a Role would grant them."""


class MeshInvalid(PermanentError):
    """The object exists but is not shaped the way meshbot needs."""


class GitOpsOwned(PermanentError):
    """A GitOps controller owns the object and would revert meshbot's change."""


class TemporaryError(MeshbotError):
    """Retrying after ``delay`` seconds may succeed."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class MeshConflict(TemporaryError):
    """The object changed between read and write (HTTP 409, stale resourceVersion)."""


class MeshUnavailable(TemporaryError):
    """The Kubernetes API answered 5xx, timed out or refused the connection."""


class MetricsUnavailable(TemporaryError):
    """Prometheus could not be queried."""


class SlackRateLimited(TemporaryError):
    """Slack answered 429; ``delay`` is its Retry-After."""


class QueueUnavailable(TemporaryError):
    """Redis, which holds the queue and every store, did not answer (down, hung, refused)."""

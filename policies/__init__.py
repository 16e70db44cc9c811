"""The policy: its model, loader and pure decisions. Imports no I/O library and no bot/jobs."""

from policies.decide import Allow, Decision, Deny, NeedsApproval, allowed_verbs, decide, is_approver
from policies.loader import (
    check_policy_file,
    load_default_policy,
    load_policy_file,
    load_policy_text,
    policy_json_schema,
)
from policies.policy import Policy
from policies.views import ServiceView

__all__ = [
    "Allow",
    "Decision",
    "Deny",
    "NeedsApproval",
    "Policy",
    "ServiceView",
    "allowed_verbs",
    "check_policy_file",
    "decide",
    "is_approver",
    "load_default_policy",
    "load_policy_file",
    "load_policy_text",
    "policy_json_schema",
]

"""Sidecar injection and mTLS: what their threads say.

Pure functions: facts in, Slack mrkdwn out. Every message carries its essentials in ``text``,
names people as ``<@U…>`` and writes weights as ``stable 90 / canary 10``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rendering.common import (
    _listed,
    user,
)


def no_namespace(namespace: str) -> str:
    return f"namespace `{namespace}` does not exist; nothing was changed"


def namespace_not_managed(namespace: str, forbidden: str) -> str:
    return (f"namespace `{namespace}` does not exist or is not one meshbot manages "
            f"({forbidden}); nothing was changed")


def own_namespace(namespace: str, what: str) -> str:
    return (f"`{namespace}` is meshbot's own namespace and is never {what}: meshbot must stay "
            "reachable to roll the mesh back")


def no_deployments(service: str, namespace: str) -> str:
    return (f"no Deployment labelled `app={service}` in namespace `{namespace}`; nothing was "
            "changed")


def _by_tier(services: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{tier}: {', '.join(f'`{s}`' for s in names)}"
                     for tier, names in services.items())


def inject_root(service: str, namespace: str, requester: str,
                deployments: Sequence[str]) -> str:
    return (f":syringe: *Sidecar injection* `{service}` ({namespace}) requested by "
            f"{user(requester)}: pod template annotation `sidecar.istio.io/inject: \"true\"` on "
            f"{_listed(deployments)}")


def tier_order_skipped(service: str, tier: str, missing: Mapping[str, Sequence[str]]) -> str:
    return (f":warning: Tier order skipped: the runbook migrates pilot → core → critical, and "
            f"`{service}` is {tier} while these earlier-tier services have no sidecar yet: "
            f"{_by_tier(missing)}. Going ahead as asked.")


def deployment_unchanged(name: str) -> str:
    return f"• `{name}`: already annotated; not restarted"


def deployment_rolling(name: str, facts: Mapping[str, int]) -> str:
    return (f"• `{name}`: pod template changed (generation {facts['generation']}); Kubernetes "
            f"replaces its {facts['replicas']} pod(s) with injected ones — "
            f"{facts['updated']} updated, {facts['ready']} ready so far")


def inject_done(service: str, lines: Sequence[str], changed: bool) -> str:
    head = (":white_check_mark: Injection requested; the rollout restarts the pods:" if changed
            else ":white_check_mark: Nothing to do: every Deployment already asks for a sidecar.")
    follow = (f"\nFollow it with `kubectl rollout status deployment -l app={service}`; "
              f"`/mesh status {service}` once pods are ready." if changed else "")
    return "\n".join([head, *lines]) + follow


def inject_namespace_root(namespace: str, requester: str) -> str:
    return (f":syringe: *Namespace injection* `{namespace}` requested by {user(requester)}: "
            "label `istio-injection=enabled`")


def namespace_before_tiers(namespace: str, pending: Mapping[str, Sequence[str]]) -> str:
    return (f":warning: Tier order skipped: the runbook labels the namespace last, after "
            f"migrating pilot → core → critical one service at a time, and in `{namespace}` "
            f"these have no sidecar yet: {_by_tier(pending)}. They get one at their next "
            "restart.")


def namespace_revision(namespace: str, revision: str) -> str:
    return (f":information_source: `{namespace}` uses revision-based injection "
            f"(`istio.io/rev={revision}`); left as is — `istio-injection` was not added, since "
            "it would take precedence over the revision.")


def namespace_already_injected(namespace: str) -> str:
    return f":white_check_mark: `{namespace}` already has `istio-injection=enabled`; unchanged."


def namespace_injected(namespace: str, before: str | None) -> str:
    was = f"was `{before}`" if before else "was unset"
    return (f":white_check_mark: `{namespace}` labelled `istio-injection=enabled` ({was}). New "
            "pods get a sidecar; running pods get one when they restart.")


def mtls_root(namespace: str, mode: str, requester: str) -> str:
    extra = " and DestinationRules to ISTIO_MUTUAL" if mode == "STRICT" else ""
    return (f":lock: *mTLS* `{namespace}` requested by {user(requester)}: PeerAuthentication "
            f"`default` to {mode}{extra}")


def strict_without_injection(namespace: str) -> str:
    return (f":warning: `{namespace}` is not labelled for sidecar injection: workloads without "
            "a sidecar cannot answer mTLS, and clients without one can no longer call the "
            "namespace's workloads once it is STRICT.")


def mtls_destination_rules(changed: Sequence[str], already: Sequence[str],
                           left: Sequence[tuple[str, str]]) -> str:
    parts = [f":white_check_mark: DestinationRules: `tls.mode: ISTIO_MUTUAL` set on "
             f"{_listed(changed)}"]
    if already:
        parts.append(f"already so: {_listed(already)}")
    if left:
        parts.append("left alone (TLS origination to an outside host): "
                     + ", ".join(f"`{n}` ({m})" for n, m in left))
    return "; ".join(parts) + "."


def mtls_peer_authentication(namespace: str, name: str, before: str | None, mode: str,
                             created: bool) -> str:
    if created:
        return (f":white_check_mark: PeerAuthentication `{namespace}/{name}` created with mTLS "
                f"{mode}.")
    if before == mode:
        return f":white_check_mark: PeerAuthentication `{namespace}/{name}` was already {mode}."
    return (f":white_check_mark: PeerAuthentication `{namespace}/{name}`: mTLS "
            f"{before or 'unset'} → {mode}.")

"""The ``/mesh`` command grammar: text in, a typed ``Command`` out, or a ``GrammarError``.

``/mesh <verb> [target] [args] [key=value ...]``. Pure: no I/O, no policy — the grammar says
only whether the text is well formed, and what it asks for.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from meshbot.commands import Command, TargetKind, Verb
from meshbot.errors import GrammarError
from meshbot.verbs import REGISTRY, VERBS, Args

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
BACKUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")
CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Derived from the verb registry: usage lines for /mesh help and every error message.
USAGE: dict[Verb, str] = {s.verb: s.full_usage for s in REGISTRY}


def target_kind(verb: Verb) -> TargetKind:
    return VERBS[verb].target


def usage(verb: Verb) -> str:
    return f"/mesh {USAGE[verb]}"


def parse_duration(text: str) -> float:
    """``30s``, ``1m``, ``1.5h``, ``500ms`` → seconds."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise GrammarError(
            f"`{text}` is not a duration; expected a number and a unit, e.g. 30s or 2m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_percent(text: str, what: str = "percent") -> int:
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > 100:
        raise GrammarError(f"`{text}` is not a valid {what}; expected a whole number from 0 to 100")
    return int(text)


def _check_name(verb: Verb, kind: TargetKind, name: str) -> str:
    if kind is TargetKind.BACKUP:
        if not BACKUP_ID.fullmatch(name):
            raise GrammarError(f"`{name}` is not a backup id; `/mesh backups` lists them")
        return name
    if not DNS1123_LABEL.fullmatch(name):
        raise GrammarError(
            f"`{name}` is not a valid {kind.value} name: expected a DNS-1123 label "
            "(lower-case letters, digits and '-', starting and ending with a letter or digit, "
            f"at most 63 characters). Usage: `{usage(verb)}`"
        )
    return name


def parse(text: str) -> Command:
    """Parse the text after ``/mesh``. Raises ``GrammarError`` with a message for a person."""
    words = text.split()
    if not words:
        return Command(verb=Verb.HELP)
    head = words[0].lower()
    try:
        verb = Verb(head)
    except ValueError:
        known = ", ".join(v.value for v in Verb)
        raise GrammarError(f"unknown command `{head[:40]}`. Known commands: {known}. "
                           "Try `/mesh help`.") from None
    positional = [w for w in words[1:] if "=" not in w]
    options: dict[str, str] = {}
    for word in words[1:]:
        if "=" in word:
            key, _, value = word.partition("=")
            if not key or not value:
                raise GrammarError(f"`{word}` is not key=value. Usage: `{usage(verb)}`")
            key = key.lower()
            if key in options:
                raise GrammarError(f"`{key}` is given twice. Usage: `{usage(verb)}`")
            options[key] = value
    kind = target_kind(verb)
    target: str | None = None
    if kind is not TargetKind.NONE:
        # status and audit name their service; backup defaults to the policy's namespace.
        optional_target = kind is TargetKind.NAMESPACE and VERBS[verb].target_optional
        if not positional:
            if not optional_target:
                raise GrammarError(f"`{verb.value}` needs a {kind.value}. Usage: `{usage(verb)}`")
        else:
            target = _check_name(verb, kind, positional.pop(0))
    dry_run = _take_dry_run(verb, positional)
    cluster = _take_cluster(verb, options)
    command = _PARSERS[VERBS[verb].args](verb, target, positional, options)
    if dry_run or cluster:
        command = command.model_copy(update={"dry_run": dry_run, "cluster": cluster})
    return command


def _take_cluster(verb: Verb, options: dict[str, str]) -> str | None:
    """``cluster=<name>`` names the policy's cluster on any verb (the gate checks the name)."""
    cluster = options.pop("cluster", None)
    if cluster is not None and not CLUSTER_NAME.fullmatch(cluster):
        raise GrammarError(f"`cluster={cluster[:64]}` is not a cluster name: lower-case letters, "
                           f"digits, '-' and '_', starting with a letter. Usage: `{usage(verb)}`")
    return cluster


def _take_dry_run(verb: Verb, positional: list[str]) -> bool:
    """``dry-run`` may stand anywhere after the target, once, on a verb that changes the mesh."""
    found = [w for w in positional if w.lower() == "dry-run"]
    if not found:
        return False
    if not VERBS[verb].takes_dry_run:
        raise GrammarError(f"`{verb.value}` changes nothing, so it has no dry run. "
                           f"Usage: `{usage(verb)}`")
    if positional and positional[0].lower() in VERBS[verb].read_only:
        raise GrammarError(f"`{verb.value} {positional[0].lower()}` changes nothing, so it has "
                           f"no dry run. Usage: `{usage(verb)}`")
    if len(found) > 1:
        raise GrammarError(f"`dry-run` is given twice. Usage: `{usage(verb)}`")
    positional.remove(found[0])
    return True


def _reject_extra(verb: Verb, positional: list[str], options: dict[str, str],
                  allowed: frozenset[str] = frozenset()) -> None:
    if positional:
        raise GrammarError(f"unexpected `{' '.join(positional)}`. Usage: `{usage(verb)}`")
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise GrammarError(f"unknown option `{unknown[0]}`. Usage: `{usage(verb)}`")


def _no_args(verb: Verb, target: str | None, positional: list[str],
             options: dict[str, str]) -> Command:
    _reject_extra(verb, positional, options)
    return Command(verb=verb, target=target)


def _canary(verb: Verb, target: str | None, positional: list[str],
            options: dict[str, str]) -> Command:
    if not positional:
        raise GrammarError(f"`canary` needs a percent. Usage: `{usage(verb)}`")
    percent = parse_percent(positional.pop(0))
    _reject_extra(verb, positional, options)
    return Command(verb=verb, target=target, percent=percent)


def _rollout(verb: Verb, target: str | None, positional: list[str],
             options: dict[str, str]) -> Command:
    _reject_extra(verb, positional, options, frozenset({"steps", "interval"}))
    steps: tuple[int, ...] | None = None
    if "steps" in options:
        steps = tuple(parse_percent(s, "step") for s in options["steps"].split(","))
        if any(s < 1 or s > 99 for s in steps) or list(steps) != sorted(set(steps)):
            raise GrammarError(
                f"steps `{options['steps']}` must be increasing canary weights between 1 and 99, "
                "e.g. steps=5,10,25,50 (100 is `/mesh promote`)"
            )
    interval = parse_duration(options["interval"]) if "interval" in options else None
    if interval is not None and not 1.0 <= interval <= 3600.0:
        raise GrammarError("interval must be between 1s and 1h, e.g. interval=30s")
    return Command(verb=verb, target=target, steps=steps, interval_s=interval)


def _audit(verb: Verb, target: str | None, positional: list[str],
           options: dict[str, str]) -> Command:
    count = 10
    if positional:
        word = positional.pop(0)
        if not re.fullmatch(r"[0-9]{1,3}", word) or not 1 <= int(word) <= 100:
            raise GrammarError(
                f"`{word}` is not a count; expected 1 to 100. Usage: `{usage(verb)}`")
        count = int(word)
    _reject_extra(verb, positional, options)
    return Command(verb=verb, target=target, options={"n": str(count)})


def _switch(verb: Verb, target: str | None, positional: list[str],
            options: dict[str, str]) -> Command:
    choices = VERBS[verb].switches
    if not positional or positional[0].lower() not in choices:
        raise GrammarError(f"`{verb.value}` needs one of {' | '.join(choices)}. "
                           f"Usage: `{usage(verb)}`")
    switch = positional.pop(0).lower()
    _reject_extra(verb, positional, options)
    return Command(verb=verb, target=target, switch=switch)


def _ab(verb: Verb, target: str | None, positional: list[str],
        options: dict[str, str]) -> Command:
    if positional and positional[0].lower() == "off" and not options:
        positional.pop(0)
        _reject_extra(verb, positional, options)
        return Command(verb=verb, target=target, switch="off")
    _reject_extra(verb, positional, options, frozenset({"header"}))
    name, sep, value = options.get("header", "").partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name) or not value:
        raise GrammarError(f"`ab` needs header=<name>:<value>, e.g. header=canary:true. "
                           f"Usage: `{usage(verb)}`")
    # Istio requires lower-case header names in match rules.
    return Command(verb=verb, target=target, options={"header": name.lower(), "value": value})


def _mirror(verb: Verb, target: str | None, positional: list[str],
            options: dict[str, str]) -> Command:
    if not positional:
        raise GrammarError(f"`mirror` needs a percent or off. Usage: `{usage(verb)}`")
    word = positional.pop(0).lower()
    _reject_extra(verb, positional, options, frozenset({"confirm"}))
    if word == "off":
        _reject_extra(verb, [], options)
        return Command(verb=verb, target=target, switch="off")
    # A service that writes is mirrored only when confirmed: its writes would run twice.
    if options and options["confirm"].lower() != "yes":
        raise GrammarError(f"`confirm={options['confirm']}`: the only confirmation is "
                           f"confirm=yes. Usage: `{usage(verb)}`")
    confirm = {"confirm": "yes"} if options else {}
    return Command(verb=verb, target=target, percent=parse_percent(word), options=confirm)


# Istio's principal of a workload: <trust domain>/ns/<namespace>/sa/<service account>.
PRINCIPAL = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/ns/[a-z0-9]([-a-z0-9]{0,61}"
                       r"[a-z0-9])?/sa/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
# Istio matches a path exactly, by prefix (/api/*), by suffix (*/info) or by presence (*).
AUTHZ_PATH = re.compile(r"^(\*|\*?/[A-Za-z0-9._~!$&'()+,;=:@%/-]*\*?)$")
_AUTHZ_OPTIONS = {"deny-all": frozenset({"confirm"}), "list": frozenset(),
                  "remove": frozenset({"confirm"}),
                  "allow": frozenset({"from", "to", "methods", "paths", "confirm"})}


def _listed(verb: Verb, key: str, value: str) -> list[str]:
    items = list(dict.fromkeys(item for item in value.split(",") if item))
    if not items or len(items) > 20:
        raise GrammarError(f"`{key}=` needs 1 to 20 comma-separated values. "
                           f"Usage: `{usage(verb)}`")
    return items


def _source(verb: Verb, text: str) -> str:
    principal = text.removeprefix("spiffe://")
    if PRINCIPAL.fullmatch(principal) or DNS1123_LABEL.fullmatch(text):
        return principal
    raise GrammarError(
        f"`from={text[:80]}` is neither a principal (`cluster.local/ns/<namespace>/sa/"
        f"<service account>`) nor a namespace name. Usage: `{usage(verb)}`")


def _path(verb: Verb, text: str) -> str:
    both = text.startswith("*") and text.endswith("*") and text != "*"
    if len(text) > 256 or both or not AUTHZ_PATH.fullmatch(text):
        raise GrammarError(
            f"`{text[:80]}` is not a path Istio can match: start with `/`, and use `*` only "
            f"once, at the end (`/api/*`) or the start (`*/info`), or alone. "
            f"Usage: `{usage(verb)}`")
    return text


def _authz(verb: Verb, target: str | None, positional: list[str],
           options: dict[str, str]) -> Command:
    action = positional.pop(0).lower() if positional else ""
    if action not in _AUTHZ_OPTIONS:
        raise GrammarError(f"`authz` needs deny-all, allow, list or remove. "
                           f"Usage: `{usage(verb)}`")
    found: dict[str, str] = {}
    if action == "remove":
        if not positional:
            raise GrammarError(f"`authz remove` needs the policy's name (`/mesh authz "
                               f"{target} list` shows them). Usage: `{usage(verb)}`")
        name = positional.pop(0)
        if not DNS1123_LABEL.fullmatch(name):
            raise GrammarError(f"`{name[:80]}` is not an AuthorizationPolicy name meshbot "
                               f"writes (`/mesh authz {target} list` shows them). "
                               f"Usage: `{usage(verb)}`")
        found["name"] = name
    _reject_extra(verb, positional, options, _AUTHZ_OPTIONS[action])
    if "confirm" in options:
        if options["confirm"].lower() != "yes":
            raise GrammarError(f"`confirm={options['confirm']}`: the only confirmation is "
                               f"confirm=yes. Usage: `{usage(verb)}`")
        found["confirm"] = "yes"
    if action == "allow":
        if "from" not in options or "to" not in options:
            raise GrammarError(f"`authz allow` needs from= and to=. Usage: `{usage(verb)}`")
        sources = [_source(verb, s) for s in _listed(verb, "from", options["from"])]
        found["from"] = ",".join(dict.fromkeys(sources))
        found["to"] = _check_name(verb, TargetKind.SERVICE, options["to"])
        if "methods" in options:
            methods = [m.upper() for m in _listed(verb, "methods", options["methods"])]
            unknown = [m for m in methods if m not in HTTP_METHODS]
            if unknown:
                raise GrammarError(f"`{unknown[0][:20]}` is not an HTTP method; use "
                                   f"{', '.join(HTTP_METHODS)}. Usage: `{usage(verb)}`")
            found["methods"] = ",".join(dict.fromkeys(methods))
        if "paths" in options:
            found["paths"] = ",".join(_path(verb, p) for p in _listed(
                verb, "paths", options["paths"]))
    return Command(verb=verb, target=target, switch=action, options=found)


def _migrate(verb: Verb, target: str | None, positional: list[str],
             options: dict[str, str]) -> Command:
    if positional and positional[0].lower() in VERBS[verb].switches:
        switch = positional.pop(0).lower()
        _reject_extra(verb, positional, options)
        return Command(verb=verb, target=target, switch=switch)
    _reject_extra(verb, positional, options, frozenset({"phase", "force"}))
    found: dict[str, str] = {}
    if "phase" in options:
        phase = options["phase"].lower()
        if phase != "all" and not re.fullmatch(r"[1-5]", phase):
            raise GrammarError(f"`phase={options['phase'][:20]}` is out of range: the runbook's "
                               f"migration has phases 1 to 5 (or all). Usage: `{usage(verb)}`")
        found["phase"] = phase
    if "force" in options:
        if options["force"].lower() != "yes":
            raise GrammarError(f"`force={options['force'][:20]}`: the only force is force=yes. "
                               f"Usage: `{usage(verb)}`")
        found["force"] = "yes"
    return Command(verb=verb, target=target, options=found)


Parser = Callable[[Verb, str | None, list[str], dict[str, str]], Command]
_PARSERS: dict[Args, Parser] = {
    Args.NONE: _no_args,
    Args.PERCENT: _canary,
    Args.ROLLOUT: _rollout,
    Args.COUNT: _audit,
    Args.SWITCH: _switch,
    Args.RESTORE: _no_args,
    Args.HEADER: _ab,
    Args.MIRROR: _mirror,
    Args.MIGRATE: _migrate,
    Args.AUTHZ: _authz,
}

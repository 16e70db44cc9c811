"""`/mesh authz`: what the grammar accepts, and how it refuses malformed callers, methods and
paths before anything reaches a worker."""

from __future__ import annotations

import pytest

from bot.grammar import parse
from meshbot.commands import Command, Verb
from meshbot.errors import GrammarError
from meshbot.verbs import changes

WEB = "cluster.local/ns/frontend/sa/web"


def test_deny_all_list_and_remove() -> None:
    assert parse("authz production deny-all") == Command(
        verb=Verb.AUTHZ, target="production", switch="deny-all")
    assert parse("authz production list").switch == "list"
    removed = parse("authz production remove allow-a-from-b confirm=yes")
    assert removed.options == {"name": "allow-a-from-b", "confirm": "yes"}


def test_allow_normalises_callers_methods_and_paths() -> None:
    command = parse(f"authz production allow from=spiffe://{WEB},frontend,frontend "
                    "to=payment-service methods=get,POST paths=/api/*,*/info,*")
    assert command.switch == "allow"
    assert command.options == {"from": f"{WEB},frontend", "to": "payment-service",
                               "methods": "GET,POST", "paths": "/api/*,*/info,*"}


def test_dry_run_of_a_change_but_not_of_list() -> None:
    assert parse("authz production deny-all dry-run").dry_run
    assert parse(f"authz production allow from={WEB} to=a dry-run").dry_run
    with pytest.raises(GrammarError, match="changes nothing, so it has no dry run"):
        parse("authz production list dry-run")


def test_only_list_changes_nothing() -> None:
    assert not changes(parse("authz production list"))
    assert changes(parse("authz production deny-all"))
    assert changes(parse("authz production remove x"))


@pytest.mark.parametrize(("text", "message"), [
    ("authz production", "needs deny-all, allow, list or remove"),
    ("authz production open-all", "needs deny-all, allow, list or remove"),
    ("authz production allow to=a", "needs from= and to="),
    ("authz production allow from=frontend", "needs from= and to="),
    ("authz production allow from=frontend/sa/web to=a", "neither a principal"),
    ("authz production allow from=cluster.local/ns/Front/sa/web to=a", "neither a principal"),
    ("authz production allow from=frontend to=Payment", "not a valid service name"),
    ("authz production allow from=frontend to=a methods=GET,FETCH", "`FETCH` is not an HTTP"),
    ("authz production allow from=frontend to=a paths=api/*", "not a path Istio can match"),
    ("authz production allow from=frontend to=a paths=/a*b", "not a path Istio can match"),
    ("authz production allow from=frontend to=a paths=*/a/*", "not a path Istio can match"),
    ("authz production allow from=frontend to=a paths=/a/<b>", "not a path Istio can match"),
    ("authz production allow from=, to=a", "1 to 20 comma-separated"),
    ("authz production deny-all confirm=sure", "the only confirmation is confirm=yes"),
    ("authz production deny-all from=frontend", "unknown option `from`"),
    ("authz production list everything", "unexpected `everything`"),
    ("authz production remove", "needs the policy's name"),
    ("authz production remove Allow_A", "not an AuthorizationPolicy name meshbot writes"),
    ("authz Production list", "not a valid namespace name"),
])
def test_malformed_is_refused(text: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message.replace("*", r"\*")):
        parse(text)

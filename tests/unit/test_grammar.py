"""The ``/mesh`` grammar as a user meets it: what each verb accepts, and what a refusal says."""

from __future__ import annotations

import pytest

from bot.grammar import parse, parse_duration, usage
from meshbot.commands import Command, Verb
from meshbot.errors import GrammarError, UserError
from meshbot.verbs import REGISTRY
from rendering.common import describe


def refusal(text: str) -> str:
    """The message a user sees for ``/mesh <text>``; fails the test if the text parses."""
    with pytest.raises(GrammarError) as info:
        parse(text)
    assert info.value.message, "a refusal must say something"
    assert str(info.value) == info.value.message
    return info.value.message


# --------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "help", "HELP", "  help  "])
def test_empty_text_and_help_are_help(text: str) -> None:
    assert parse(text) == Command(verb=Verb.HELP)


def test_help_takes_no_arguments() -> None:
    message = refusal("help canary")
    assert "unexpected `canary`" in message
    assert "/mesh help" in message


def test_grammar_error_is_a_user_error() -> None:
    with pytest.raises(UserError):
        parse("frobnicate")


# ------------------------------------------------------------------------------- unknown verb


def test_unknown_verb_lists_every_known_command() -> None:
    message = refusal("deploy payment-service")
    assert "unknown command `deploy`" in message
    for verb in Verb:
        assert verb.value in message
    assert "/mesh help" in message


def test_unknown_verb_is_truncated_in_the_message() -> None:
    message = refusal("x" * 500)
    assert "x" * 40 in message
    assert "x" * 41 not in message


def test_verb_is_case_insensitive() -> None:
    assert parse("Canary payment-service 10") == parse("canary payment-service 10")


# ------------------------------------------------------------------------- service verbs


SERVICE_VERBS = [
    Verb.STATUS,
    Verb.PROMOTE,
    Verb.ROLLBACK,
    Verb.PAUSE,
    Verb.RESUME,
    Verb.ABORT,
    Verb.UNLOCK,
    Verb.BLUEGREEN,
    Verb.INJECT,
]


@pytest.mark.parametrize("verb", SERVICE_VERBS)
def test_service_verb_takes_a_service(verb: Verb) -> None:
    command = parse(f"{verb.value} payment-service")
    assert command == Command(verb=verb, target="payment-service")
    assert command.service == "payment-service"


@pytest.mark.parametrize(
    "verb", [*SERVICE_VERBS, Verb.CANARY, Verb.ROLLOUT, Verb.AUDIT, Verb.AB, Verb.MIRROR]
)
def test_service_verb_without_a_service_is_refused(verb: Verb) -> None:
    message = refusal(verb.value)
    assert f"`{verb.value}` needs a service" in message
    assert usage(verb) in message


@pytest.mark.parametrize("verb", SERVICE_VERBS)
def test_service_verb_refuses_extra_words(verb: Verb) -> None:
    message = refusal(f"{verb.value} payment-service now")
    assert "unexpected `now`" in message
    assert usage(verb) in message


@pytest.mark.parametrize("verb", SERVICE_VERBS)
def test_service_verb_refuses_an_unknown_option(verb: Verb) -> None:
    message = refusal(f"{verb.value} payment-service force=true")
    assert "unknown option `force`" in message
    assert usage(verb) in message


@pytest.mark.parametrize(
    "name",
    [
        "Payment-Service",  # upper case
        "payment_service",  # underscore
        "-payment",  # starts with '-'
        "payment-",  # ends with '-'
        "payment.service",  # dot
        "a" * 64,  # too long
        "pâyment",  # not ASCII
        "payment/service",
    ],
)
def test_malformed_service_name_says_dns_1123_and_shows_usage(name: str) -> None:
    message = refusal(f"canary {name} 10")
    assert f"`{name}` is not a valid service name" in message
    assert "DNS-1123 label" in message
    assert "Usage: `/mesh canary <service> <percent 0-100> [dry-run]`" in message


@pytest.mark.parametrize("name", ["a", "a" * 63, "payment-service", "svc-2", "0abc", "a-b-c"])
def test_valid_dns_1123_labels_are_accepted(name: str) -> None:
    assert parse(f"status {name}").target == name


# ---------------------------------------------------------------------------------- canary


@pytest.mark.parametrize("percent", [0, 1, 10, 25, 99, 100])
def test_canary_takes_a_percent(percent: int) -> None:
    command = parse(f"canary payment-service {percent}")
    assert command == Command(verb=Verb.CANARY, target="payment-service", percent=percent)


def test_canary_percent_with_leading_zeros_is_the_number() -> None:
    assert parse("canary payment-service 010").percent == 10


@pytest.mark.parametrize(
    "word", ["101", "1000", "-1", "10%", "ten", "2.5", "0x10", "+5", "\uff15", "\u0661\u0660"]
)
def test_canary_percent_must_be_a_whole_number_from_0_to_100(word: str) -> None:
    message = refusal(f"canary payment-service {word}")
    assert f"`{word}` is not a valid percent" in message
    assert "whole number from 0 to 100" in message


def test_canary_without_a_percent_is_refused() -> None:
    message = refusal("canary payment-service")
    assert "`canary` needs a percent" in message
    assert usage(Verb.CANARY) in message


def test_canary_refuses_extra_words_and_options() -> None:
    assert "unexpected `20`" in refusal("canary payment-service 10 20")
    assert "unknown option `steps`" in refusal("canary payment-service 10 steps=5")


# --------------------------------------------------------------------------------- rollout


def test_rollout_with_defaults_leaves_steps_and_interval_to_the_policy() -> None:
    command = parse("rollout payment-service")
    assert command == Command(verb=Verb.ROLLOUT, target="payment-service")
    assert command.steps is None
    assert command.interval_s is None


def test_rollout_with_steps_and_interval() -> None:
    command = parse("rollout payment-service steps=5,10,25,50 interval=1m")
    assert command.steps == (5, 10, 25, 50)
    assert command.interval_s == 60.0


def test_rollout_options_in_any_order_and_case() -> None:
    a = parse("rollout payment-service interval=30s steps=5,50")
    b = parse("rollout payment-service STEPS=5,50 Interval=30s")
    assert a == b
    assert a.steps == (5, 50)
    assert a.interval_s == 30.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("1500ms", 1.5), ("1.5m", 90.0)],
)
def test_rollout_interval_units(text: str, seconds: float) -> None:
    assert parse(f"rollout payment-service interval={text}").interval_s == seconds


@pytest.mark.parametrize("steps", ["10,5", "5,5,10", "5,10,10", "0,10", "5,100", "50,99,100"])
def test_rollout_steps_must_increase_within_1_to_99(steps: str) -> None:
    message = refusal(f"rollout payment-service steps={steps}")
    assert f"steps `{steps}`" in message
    assert "increasing" in message
    assert "between 1 and 99" in message
    assert "/mesh promote" in message  # 100 is a promote


@pytest.mark.parametrize("steps", ["5,,10", "5,ten", "5,101", "5,-1", "5,"])
def test_rollout_step_that_is_not_a_percent_is_refused(steps: str) -> None:
    message = refusal(f"rollout payment-service steps={steps}")
    assert "is not a valid step" in message
    assert "0 to 100" in message


def test_rollout_single_step_is_accepted() -> None:
    assert parse("rollout payment-service steps=99").steps == (99,)


@pytest.mark.parametrize("interval", ["500ms", "999ms", "0s", "61m", "2h", "3601s"])
def test_rollout_interval_out_of_range_is_refused(interval: str) -> None:
    message = refusal(f"rollout payment-service interval={interval}")
    assert "interval must be between 1s and 1h" in message


@pytest.mark.parametrize("interval", ["30", "s", "1d", "1,5m", "-1s", "1e3s", "one-minute"])
def test_rollout_interval_that_is_not_a_duration_is_refused(interval: str) -> None:
    message = refusal(f"rollout payment-service interval={interval}")
    assert "is not a duration" in message
    assert "30s or 2m" in message


def test_duration_parser_strips_whitespace() -> None:
    assert parse_duration(" 2m ") == 120.0


def test_rollout_refuses_an_unknown_option() -> None:
    message = refusal("rollout payment-service step=5,10")
    assert "unknown option `step`" in message
    assert usage(Verb.ROLLOUT) in message


def test_rollout_refuses_positional_words() -> None:
    assert "unexpected `fast`" in refusal("rollout payment-service fast")


def test_duplicated_key_is_refused() -> None:
    message = refusal("rollout payment-service steps=5,10 steps=20,30")
    assert "`steps` is given twice" in message
    assert usage(Verb.ROLLOUT) in message


@pytest.mark.parametrize(
    "text",
    [
        "rollout payment-service STEPS=5,10 steps=20,30",
        "rollout payment-service steps=5,10 STEPS=20,30",
        "rollout payment-service Interval=1m interval=2m",
        "rollout payment-service interval=1m INTERVAL=2m",
    ],
)
def test_duplicated_key_in_another_case_is_refused(text: str) -> None:
    # Keys are case-insensitive (STEPS= means steps=), so a second spelling is a duplicate,
    # whichever comes first; silently keeping the last one would run steps the user did not ask.
    message = refusal(text)
    assert "is given twice" in message


@pytest.mark.parametrize("word", ["=5", "steps=", "="])
def test_option_that_is_not_key_value_is_refused(word: str) -> None:
    message = refusal(f"rollout payment-service {word}")
    assert f"`{word}` is not key=value" in message
    assert usage(Verb.ROLLOUT) in message


# ---------------------------------------------------------------------------------- audit


def test_audit_defaults_to_ten_entries() -> None:
    assert parse("audit payment-service") == Command(
        verb=Verb.AUDIT, target="payment-service", options={"n": "10"}
    )


@pytest.mark.parametrize("n", [1, 50, 100])
def test_audit_takes_a_count_from_1_to_100(n: int) -> None:
    assert parse(f"audit payment-service {n}").options == {"n": str(n)}


@pytest.mark.parametrize("word", ["0", "101", "-1", "ten", "1.5", "²", "①", "9" * 5000])
def test_audit_count_out_of_range_is_refused(word: str) -> None:
    message = refusal(f"audit payment-service {word}")
    assert "is not a count; expected 1 to 100" in message
    assert usage(Verb.AUDIT) in message


def test_audit_refuses_extra_words() -> None:
    assert "unexpected `5`" in refusal("audit payment-service 5 5")


# ---------------------------------------------------------------------------- no-target verbs


@pytest.mark.parametrize("verb", [Verb.LOCKS, Verb.BACKUPS, Verb.READINESS])
def test_verbs_without_a_target(verb: Verb) -> None:
    assert parse(verb.value) == Command(verb=verb)
    message = refusal(f"{verb.value} payment-service")
    assert "unexpected `payment-service`" in message
    assert usage(verb) in message


# ---------------------------------------------------------------------------------- freeze


@pytest.mark.parametrize(
    ("word", "switch"), [("on", "on"), ("off", "off"), ("ON", "on"), ("Off", "off")]
)
def test_freeze_on_or_off(word: str, switch: str) -> None:
    assert parse(f"freeze {word}") == Command(verb=Verb.FREEZE, switch=switch)


@pytest.mark.parametrize("text", ["freeze", "freeze yes", "freeze true", "freeze production"])
def test_freeze_needs_on_or_off(text: str) -> None:
    message = refusal(text)
    assert "`freeze` needs one of on | off" in message
    assert "Usage: `/mesh freeze on|off`" in message


def test_freeze_refuses_extra_words() -> None:
    assert "unexpected `now`" in refusal("freeze on now")


# ------------------------------------------------------------------------------------ mtls


@pytest.mark.parametrize(
    ("word", "switch"), [("strict", "strict"), ("permissive", "permissive"), ("STRICT", "strict")]
)
def test_mtls_strict_or_permissive(word: str, switch: str) -> None:
    assert parse(f"mtls production {word}") == Command(
        verb=Verb.MTLS, target="production", switch=switch
    )


@pytest.mark.parametrize(
    "text", ["mtls production", "mtls production disable", "mtls production on"]
)
def test_mtls_needs_strict_or_permissive(text: str) -> None:
    message = refusal(text)
    assert "`mtls` needs one of strict | permissive" in message
    assert usage(Verb.MTLS) in message


def test_mtls_without_a_namespace_is_refused() -> None:
    message = refusal("mtls")
    assert "`mtls` needs a namespace" in message


def test_mtls_namespace_must_be_a_dns_label() -> None:
    message = refusal("mtls Production strict")
    assert "not a valid namespace name" in message
    assert "DNS-1123 label" in message
    assert usage(Verb.MTLS) in message


# ------------------------------------------------------------------------ namespace verbs


@pytest.mark.parametrize("verb", [Verb.INJECT_NAMESPACE, Verb.EMERGENCY])
def test_namespace_verbs_take_a_namespace(verb: Verb) -> None:
    assert parse(f"{verb.value} production") == Command(verb=verb, target="production")
    assert f"`{verb.value}` needs a namespace" in refusal(verb.value)
    assert "not a valid namespace name" in refusal(f"{verb.value} prod_ns")


def test_backup_without_a_namespace() -> None:
    assert parse("backup") == Command(verb=Verb.BACKUP, target=None)


def test_backup_with_a_namespace() -> None:
    assert parse("backup production") == Command(verb=Verb.BACKUP, target="production")


def test_backup_namespace_must_be_a_dns_label() -> None:
    message = refusal("backup Production")
    assert "DNS-1123 label" in message
    assert usage(Verb.BACKUP) in message


def test_backup_refuses_a_second_namespace() -> None:
    assert "unexpected `staging`" in refusal("backup production staging")


# --------------------------------------------------------------------------------- restore


def test_restore_a_backup() -> None:
    assert parse("restore bk-2024.01.01_12") == Command(
        verb=Verb.RESTORE, target="bk-2024.01.01_12"
    )


@pytest.mark.parametrize("word", ["dry-run", "DRY-RUN"])
def test_restore_dry_run(word: str) -> None:
    assert parse(f"restore bk-1 {word}") == Command(
        verb=Verb.RESTORE, target="bk-1", dry_run=True
    )


def test_restore_needs_a_backup_id() -> None:
    message = refusal("restore")
    assert "`restore` needs a backup" in message
    assert usage(Verb.RESTORE) in message


@pytest.mark.parametrize("backup_id", ["-bk", ".bk", "bk/1", "b" * 82, "bk:1"])
def test_restore_malformed_backup_id_points_to_backups(backup_id: str) -> None:
    message = refusal(f"restore {backup_id}")
    assert f"`{backup_id}` is not a backup id" in message
    assert "/mesh backups" in message


def test_restore_refuses_anything_but_dry_run() -> None:
    assert "unexpected `now`" in refusal("restore bk-1 now")
    assert "`dry-run` is given twice" in refusal("restore bk-1 dry-run dry-run")


# ---------------------------------------------------------------------------------- dry-run

@pytest.mark.parametrize(("text", "expected"), [
    ("canary payment-service 10 dry-run",
     Command(verb=Verb.CANARY, target="payment-service", percent=10, dry_run=True)),
    ("canary payment-service dry-run 10",
     Command(verb=Verb.CANARY, target="payment-service", percent=10, dry_run=True)),
    ("rollback payment-service DRY-RUN",
     Command(verb=Verb.ROLLBACK, target="payment-service", dry_run=True)),
    ("mtls production strict dry-run",
     Command(verb=Verb.MTLS, target="production", switch="strict", dry_run=True)),
    ("rollout payment-service steps=5,50 dry-run",
     Command(verb=Verb.ROLLOUT, target="payment-service", steps=(5, 50), dry_run=True)),
    ("ab payment-service off dry-run",
     Command(verb=Verb.AB, target="payment-service", switch="off", dry_run=True)),
])
def test_every_change_takes_dry_run_anywhere_after_its_target(text: str,
                                                               expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("text", ["status payment-service dry-run", "locks dry-run",
                                  "audit payment-service dry-run", "backups dry-run"])
def test_dry_run_refused_where_nothing_changes(text: str) -> None:
    assert "changes nothing, so it has no dry run" in refusal(text)


def test_usage_shows_dry_run_on_exactly_the_changing_verbs() -> None:
    for spec in REGISTRY:
        assert usage(spec.verb).endswith("[dry-run]") == (spec.changes_mesh or spec.wins)


# -------------------------------------------------------------------------------------- ab


def test_ab_header_name_is_lower_cased_and_value_kept() -> None:
    command = parse("ab payment-service header=X-Canary:True")
    assert command == Command(
        verb=Verb.AB, target="payment-service", options={"header": "x-canary", "value": "True"}
    )


def test_ab_header_value_may_contain_colons_and_equals() -> None:
    command = parse("ab payment-service header=x-user:a:b=c")
    assert command.options == {"header": "x-user", "value": "a:b=c"}


@pytest.mark.parametrize("word", ["off", "OFF"])
def test_ab_off(word: str) -> None:
    assert parse(f"ab payment-service {word}") == Command(
        verb=Verb.AB, target="payment-service", switch="off"
    )


@pytest.mark.parametrize(
    "text",
    [
        "ab payment-service",
        "ab payment-service header=x-canary",  # no ':'
        "ab payment-service header=:true",  # no name
        "ab payment-service header=x-canary:",  # no value
        "ab payment-service header=x_canary:true",  # '_' is not allowed in the name
        "ab payment-service header=" + "h" * 65 + ":v",
    ],
)
def test_ab_needs_header_name_and_value(text: str) -> None:
    message = refusal(text)
    assert "`ab` needs header=<name>:<value>" in message
    assert usage(Verb.AB) in message


def test_ab_refuses_off_with_a_header_and_unknown_options() -> None:
    assert "unexpected `off`" in refusal("ab payment-service off header=x:y")
    assert "unknown option `cookie`" in refusal("ab payment-service cookie=a:b")


# ---------------------------------------------------------------------------------- mirror


@pytest.mark.parametrize("percent", [0, 10, 100])
def test_mirror_percent(percent: int) -> None:
    assert parse(f"mirror payment-service {percent}") == Command(
        verb=Verb.MIRROR, target="payment-service", percent=percent
    )


@pytest.mark.parametrize("word", ["off", "Off"])
def test_mirror_off(word: str) -> None:
    assert parse(f"mirror payment-service {word}") == Command(
        verb=Verb.MIRROR, target="payment-service", switch="off"
    )


def test_mirror_needs_a_percent_or_off() -> None:
    message = refusal("mirror payment-service")
    assert "`mirror` needs a percent or off" in message
    assert usage(Verb.MIRROR) in message


@pytest.mark.parametrize("word", ["101", "on", "half"])
def test_mirror_bad_percent_is_refused(word: str) -> None:
    assert "whole number from 0 to 100" in refusal(f"mirror payment-service {word}")


def test_mirror_refuses_extra_words() -> None:
    assert "unexpected `now`" in refusal("mirror payment-service off now")


# ------------------------------------------------------------------------------ whitespace


def test_words_are_split_on_any_whitespace() -> None:
    assert parse("  canary\tpayment-service \n 10 ") == Command(
        verb=Verb.CANARY, target="payment-service", percent=10
    )


def test_command_is_frozen_and_json_safe() -> None:
    command = parse("rollout payment-service steps=5,10 interval=30s")
    with pytest.raises(ValueError):
        command.target = "other"  # type: ignore[misc]
    assert Command.model_validate(command.model_dump(mode="json")) == command


@pytest.mark.parametrize("text", [
    "canary payment-service 10 cluster=prod-eu dry-run",
    "rollout payment-service steps=5,50 interval=2m",
    "ab logging-service header=canary:true",
    "ab logging-service off dry-run",
    "mirror payment-service 20 confirm=yes",
    "mirror payment-service off",
    "audit payment-service 5",
    "mtls production strict",
    "freeze off",
    "restore bk-1 dry-run",
    "migrate shop phase=2 force=yes",
    "authz shop allow from=frontend to=cart methods=GET paths=/api/*",
    "authz shop remove allow-cart-frontend",
])
def test_a_command_is_described_as_it_was_typed(text: str) -> None:
    """What meshbot says it accepted is the command itself: typed again, it is the same."""
    described = describe(parse(text))
    assert described.startswith("/mesh ")
    assert parse(described.removeprefix("/mesh ")) == parse(text)

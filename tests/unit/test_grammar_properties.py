"""Whatever a user types after ``/mesh``, the grammar answers with a Command or a GrammarError."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.grammar import parse
from meshbot.commands import Command, Verb
from meshbot.errors import GrammarError

VERBS = [v.value for v in Verb]

# Words a user might plausibly type, plus unicode oddities (other-script digits, combining marks,
# unusual whitespace), so composed commands reach every verb's argument parser.
WORDS = [
    "payment-service",
    "production",
    "bk-1",
    "on",
    "off",
    "strict",
    "permissive",
    "dry-run",
    "10",
    "100",
    "101",
    "0",
    "-1",
    "²",
    "①",
    "\u0661\u0660",
    "\uff15",
    "9" * 5000,
    "steps=5,10,25,50",
    "STEPS=5,10",
    "interval=30s",
    "interval=1h",
    "Interval=0s",
    "header=X-Canary:true",
    "header=",
    "=",
    "==",
    "a=b=c",
    "n=3",
    "İ",
    "ß",
    "e\u0301",
    "\u00a0",
    "\u2028",
    "\x00",
]

word = st.one_of(
    st.sampled_from(WORDS),
    st.text(min_size=1, max_size=12),
    st.text(alphabet="=,:-.0123456789abcdefghijklmnopqrstuvwxyzABC", min_size=1, max_size=15),
)
separator = st.sampled_from([" ", "  ", "\t", "\n", "\u3000", "\u00a0", "\x1f"])

composed = st.builds(
    lambda verb, words, seps: verb + "".join(s + w for s, w in zip(seps, words, strict=False)),
    st.sampled_from([*VERBS, *(v.upper() for v in VERBS)]),
    st.lists(word, max_size=6),
    st.lists(separator, min_size=6, max_size=6),
)
equals_heavy = st.text(alphabet="= ,:a1\t", max_size=40)
anything = st.one_of(
    st.text(),
    equals_heavy,
    composed,
    st.text(alphabet=st.characters(categories=["Zs", "Cc", "Nd", "No"])),
)


def _parse_or_refuse(text: str) -> None:
    try:
        command = parse(text)
    except GrammarError as error:
        assert isinstance(error.message, str)
        assert error.message.strip(), f"empty refusal for {text!r}"
        return
    assert isinstance(command, Command)


@settings(max_examples=600, deadline=None)
@given(anything)
@example("audit payment-service ²")
@example("audit payment-service " + "9" * 5000)
@example("rollout payment-service steps=5 STEPS=10")
@example("=")
@example("canary = =")
def test_parse_returns_a_command_or_a_grammar_error(text: str) -> None:
    _parse_or_refuse(text)


@settings(max_examples=600, deadline=None)
@given(composed)
def test_composed_commands_return_a_command_or_a_grammar_error(text: str) -> None:
    _parse_or_refuse(text)


dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@settings(max_examples=300, deadline=None)
@given(dns_label, st.integers(min_value=0, max_value=100))
def test_a_valid_service_and_percent_round_trip_through_canary(service: str, percent: int) -> None:
    assert parse(f"canary {service} {percent}") == Command(
        verb=Verb.CANARY, target=service, percent=percent
    )


@settings(max_examples=200, deadline=None)
@given(dns_label, st.integers().filter(lambda n: not 0 <= n <= 100))
def test_a_percent_outside_0_to_100_is_always_refused(service: str, percent: int) -> None:
    try:
        parse(f"canary {service} {percent}")
    except GrammarError as error:
        assert "0 to 100" in error.message
    else:
        raise AssertionError(f"canary {service} {percent} was accepted")

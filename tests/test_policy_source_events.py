"""The policy source's quick reader (libyaml's events read straight into values) returns what
the checked reader returns, and declines every text that reader refuses, so the refusal, its
line and its rule are the checked reader's own (``edge_agent.policy._source_events`` against
``source._Reader`` over ``compose_yaml``'s node tree)."""

from __future__ import annotations

import gc

import cbor2
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import PolicyError
from edge_agent.policy import source
from edge_agent.policy._source_events import SourceValues, read_source_events
from edge_agent.policy.compiler import policy_payload
from edge_agent.policy.source import PolicySource, load_policy_source
from edge_agent.protocol.bundle import BundleTarget, bundle_payload
from tests.test_policy_source import DESIGN_EXAMPLE

PATH = "fleet.yaml"
HEAD = "target: {region: eu-1}\n"

ACCEPTED = [
    ("the design example", "tests/test_policy_source.py"),
    ("rules before the groups and actions they use", "rules_first"),
    (
        "every top-level key and every rule key",
        "target:\n  region: eu-1\n  groups: [a]\n  profiles: []\n  devices: [d1, d-2]\n"
        "ttl: 24h\nmax_offline: '1h'\ngroups: {g: [svc:a]}\nworkloads: {svc:a: [uid:1]}\n"
        "actions: [exec, read]\nrules:\n"
        "- resources: [/a/*]\n  actions: ['*', read]\n  subjects: [group:g]\n  effect: deny\n"
        "  id: r1\n  when:\n    parent: {action: [exec], resource: [/b], subject: [svc:a],\n"
        "      devices: [d1], max_age: 30s, max_depth: 3}\n"
        "    time_utc: 06:00-22:00\n    context: {zone: [a, b], site: [c]}\n",
    ),
    (
        "an empty parent",
        HEAD + "rules:\n- {id: r, effect: allow, subjects: ['*'],"
        " actions: [x], resources: [/a], when: {parent: {}}}\n",
    ),
    ("no rules", HEAD + "rules: []\n"),
    (
        "every scalar style",
        "target: {region: \"eu-1\"}\nrules:\n- id: 'r'\n  effect: |-\n"
        "    allow\n  subjects: [\"*\"]\n  actions:\n  - >-\n    read\n  resources: ['/a']\n",
    ),
    ("document markers and comments", "%YAML 1.1\n---\n# c\n" + HEAD + "rules: [] # c\n...\n"),
    (
        "an exclamation mark and an ampersand in text",
        HEAD + "rules:\n- {id: r, effect: allow,"
        " subjects: ['*'], actions: [x], resources: ['/a!b&c']}\n",
    ),
    (
        "plain texts only like YAML 1.1 values",
        HEAD + "rules:\n- {id: 1e3, effect: allow, subjects: ['*'],"
        " actions: [y, n, nULL, 0o17, ._, '-'], resources: ['0x1F', '1']}\n",
    ),
    (
        "CRLF line ends",
        (
            HEAD + "rules:\n- {id: r, effect: allow, subjects: ['*'], actions: [x],"
            " resources: [/a]}\n"
        ).replace("\n", "\r\n"),
    ),
    ("a byte order mark", "\ufeff" + HEAD + "rules: []\n"),
    ("explicit keys and a flow document", "--- {? target: {region: eu-1}, ? rules: []}\n"),
]

RULE = "- {id: r, effect: allow, subjects: ['*'], actions: [read], resources: [/a]}\n"

REFUSED = [
    ("empty", ""),
    ("only a comment", "# nothing\n"),
    ("a list at the top", "- a\n"),
    ("a scalar at the top", "text\n"),
    ("not valid YAML", "target: [unclosed\n"),
    ("an error after the document", HEAD + "rules: []\n}\n"),
    ("two documents", HEAD + "rules: []\n---\na: b\n"),
    ("a control character", HEAD + "rules: []\x07\n"),
    ("tab indentation", HEAD + "rules:\n\t- a\n"),
    ("an anchor on the top mapping", "&t\n" + HEAD + "rules: []\n"),
    ("an anchor on a rule", HEAD + "rules:\n- &r {id: r}\n"),
    ("an alias", HEAD + "rules: []\nx: *r\n"),
    ("an explicit tag on a value", HEAD + "rules:\n- {id: !!str r}\n"),
    ("a non-specific tag", "target: {region: ! eu-1}\nrules: []\n"),
    ("a tag on a list", HEAD + "rules: !!seq []\n"),
    ("a merge key", HEAD + "rules: []\n<<: {a: b}\n"),
    (
        "a merge key in a rule",
        HEAD + "rules:\n- {<<: {effect: allow}, id: r, subjects: ['*'], actions: [x],"
        " resources: [/a]}\n",
    ),
    ("a tag from a %TAG directive", "%TAG !e! tag:e.com,2000:\n---\n" + HEAD + "rules: !e!x []\n"),
    ("a non-specific tag on quoted text", "target: {region: ! 'eu-1'}\nrules: []\n"),
    ("a document after an explicit end", HEAD + "rules: []\n...\n---\n" + HEAD + "rules: []\n"),
    ("a duplicate key spelled with an escape", HEAD + 'rules: []\n"rul\\x65s": []\n'),
    ("a complex key", HEAD + "rules: []\n? [a]\n: b\n"),
    ("deep nesting", "target: " + "[" * 100 + "]" * 100 + "\nrules: []\n"),
    ("missing target", "rules: []\n"),
    ("missing rules", HEAD),
    ("an unknown top-level key", HEAD + "rules: []\nrulez: []\n"),
    ("a duplicate top-level key", HEAD + "rules: []\nrules: []\n"),
    ("a number for a key", HEAD + "rules: []\n1: a\n"),
    ("a bad region", "target: {region: -eu}\nrules: []\n"),
    ("a region that is a number", "target: {region: 1}\nrules: []\n"),
    ("a target without a region", "target: {groups: [a]}\nrules: []\n"),
    ("a duplicate target group", "target: {region: eu-1, groups: [a, a]}\nrules: []\n"),
    ("a bad ttl", HEAD + "ttl: 1y\nrules: []\n"),
    ("a ttl that is a number", HEAD + "ttl: 60\nrules: []\n"),
    ("rules as a mapping", HEAD + "rules: {}\n"),
    ("a rule as a list", HEAD + "rules:\n- [a]\n"),
    ("a rule without an id", HEAD + "rules:\n- {effect: allow}\n"),
    (
        "a rule without resources",
        HEAD + "rules:\n- {id: r, effect: allow, subjects: ['*'], actions: [read]}\n",
    ),
    ("a duplicate rule id", HEAD + "rules:\n" + RULE + RULE),
    ("a duplicate key in a rule", HEAD + "rules:\n- {id: r, id: s}\n"),
    ("an unknown key in a rule", HEAD + "rules:\n- {id: r, effekt: allow}\n"),
    ("a bad effect", HEAD + "rules:\n" + RULE.replace("allow", "permit")),
    ("a boolean in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[yes]")),
    ("a number in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[1]")),
    ("a null in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[~]")),
    ("a YAML 1.1 boolean in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[off]")),
    ("an octal number in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[017]")),
    ("a sexagesimal number in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[1:30]")),
    ("an infinity in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[-.inf]")),
    ("a timestamp in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[2001-12-14]")),
    ("a duplicate group", HEAD + "groups: {g: [svc:a], g: [svc:b]}\nrules: []\n"),
    (
        "a duplicate context key",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {context: {z: [a], z: [b]}}}"),
    ),
    (
        "a duplicate parent key",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {parent: {max_age: 30s, max_age: 2d}}}"),
    ),
    (
        "a max_depth with a leading zero (octal to YAML 1.1 tools)",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {parent: {max_depth: 010}}}"),
    ),
    (
        "a hexadecimal max_depth",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {parent: {max_depth: 0x10}}}"),
    ),
    ("a list in a list", HEAD + "rules:\n" + RULE.replace("[read]", "[[read]]")),
    ("an empty list", HEAD + "rules:\n" + RULE.replace("[read]", "[]")),
    ("a twice-listed action", HEAD + "rules:\n" + RULE.replace("[read]", "[read, read]")),
    ("a bad resource", HEAD + "rules:\n" + RULE.replace("[/a]", "[/a/**b]")),
    ("an undefined group", HEAD + "rules:\n" + RULE.replace("'*'", "group:g")),
    (
        "a group defined after the rules but not this one",
        HEAD + "rules:\n" + RULE.replace("'*'", "group:g") + "groups: {h: [svc:a]}\n",
    ),
    (
        "an action outside the vocabulary",
        HEAD + "rules:\n" + RULE.replace("[read]", "[raed]") + "actions: [read]\n",
    ),
    ("'*' in the vocabulary", HEAD + "actions: ['*']\nrules: []\n"),
    ("an empty when", HEAD + "rules:\n" + RULE.replace("}", ", when: {}}")),
    ("an empty context", HEAD + "rules:\n" + RULE.replace("}", ", when: {context: {}}}")),
    (
        "a bad time window",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {time_utc: '25:00-1:00'}}"),
    ),
    ("a time window unquoted", HEAD + "rules:\n" + RULE.replace("}", ", when: {time_utc: 06:00}}")),
    (
        "a quoted max_depth",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {parent: {max_depth: '3'}}}"),
    ),
    (
        "a negative max_depth",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {parent: {max_depth: -3}}}"),
    ),
    (
        "a parent action outside the vocabulary",
        HEAD
        + "actions: [read]\nrules:\n"
        + RULE.replace("}", ", when: {parent: {action: [exec]}}}"),
    ),
    (
        "an empty context key",
        HEAD + "rules:\n" + RULE.replace("}", ", when: {context: {'': [a]}}}"),
    ),
    (
        "a policy that does not compile",
        "target: {region: eu-1}\nworkloads: {svc:a: [uid:1]}\n"
        "groups: {svc:a: [svc:b]}\nrules: []\n",
    ),
]

COMPILE_REFUSED = {"a policy that does not compile", "an empty context key"}
"""Taken by both readers, refused by the compile (then the checked reader words it)."""


def _text(case: str) -> str:
    if case == "tests/test_policy_source.py":
        return DESIGN_EXAMPLE
    if case == "rules_first":
        return (
            "rules:\n"
            + RULE.replace("'*'", "group:g").replace("[read]", "[read, '*']")
            + "actions: [read]\ngroups: {g: [svc:a]}\n"
            + HEAD
        )
    return case


def _checked(text: str, *, compiles: bool, enforce_vocabulary: bool = True) -> object:
    """What the checked reader gives: a source, or the error's (message, path, line, rule)."""
    try:
        root = source.compose_yaml(text, PATH, what="policy source")
        return source._Reader(PATH, enforce_vocabulary, compiles).source(root)
    except PolicyError as exc:
        return str(exc), exc.path, exc.line, exc.rule


def _loaded(text: str, *, compiles: bool, enforce_vocabulary: bool = True) -> object:
    try:
        return load_policy_source(
            text, PATH, compiles=compiles, enforce_vocabulary=enforce_vocabulary
        )
    except PolicyError as exc:
        return str(exc), exc.path, exc.line, exc.rule


def _as_source(values: SourceValues) -> PolicySource:
    payload = policy_payload(values.groups, values.workloads, values.rules)
    return PolicySource(
        values.target, values.ttl_seconds, values.max_offline_seconds, payload, values.actions
    )


@pytest.mark.parametrize(("name", "case"), ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_quick_reader_returns_the_checked_readers_source(name: str, case: str) -> None:
    text = _text(case)
    values = read_source_events(text, enforce_vocabulary=True)
    assert values is not None, "the quick reader must take this text"
    expected = _checked(text, compiles=True)
    assert isinstance(expected, PolicySource)
    assert _as_source(values) == expected
    assert list(values.target) == ["region", "groups", "profiles", "devices"]
    assert _loaded(text, compiles=True) == expected


UNSORTED = (
    "groups and workloads out of key order",
    HEAD + "groups: {zz: [svc:a], b: [svc:a], aa: [svc:a]}\n"
    "workloads: {svc:b: [uid:2], svc:a: [uid:1], svc:aa: [uid:3]}\nrules:\n" + RULE,
)


@pytest.mark.parametrize(
    ("name", "case"), [*ACCEPTED, UNSORTED], ids=[case[0] for case in [*ACCEPTED, UNSORTED]]
)
def test_both_readers_build_a_bundle_payload_the_encoder_need_not_sort(
    name: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _text(case)
    values = read_source_events(text, enforce_vocabulary=True)
    checked = _checked(text, compiles=False)
    assert values is not None and isinstance(checked, PolicySource)
    quick = _as_source(values)
    assert _key_orders(quick.policy) == _key_orders(checked.policy)
    sorts: list[bool] = []
    dumps = cbor2.dumps

    def spy(value: object, *, canonical: bool = False) -> bytes:
        sorts.append(canonical)
        return dumps(value, canonical=canonical)

    monkeypatch.setattr(cbor2, "dumps", spy)
    target = BundleTarget(region="eu-1", groups=("a",), profiles=("p",), devices=("d",))
    for policy in (quick.policy, checked.policy):
        payload = bundle_payload(version=1, issued_at=1, expires_at=2, target=target, policy=policy)
        assert payload == dumps(cbor2.loads(payload), canonical=True)
    assert sorts == [False, False]


def _key_orders(value: object) -> object:
    """Every map's keys, in order, through the whole value."""
    if isinstance(value, dict):
        return [(key, _key_orders(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_key_orders(item) for item in value]
    return None


@pytest.mark.parametrize(("name", "text"), REFUSED, ids=[case[0] for case in REFUSED])
def test_refused_source_gets_the_checked_readers_error_line_and_rule(name: str, text: str) -> None:
    expected = _checked(text, compiles=True)
    assert isinstance(expected, tuple), "the checked reader must refuse this text"
    if name not in COMPILE_REFUSED:
        assert read_source_events(text, enforce_vocabulary=True) is None
    assert _loaded(text, compiles=True) == expected


def test_a_vocabulary_not_enforced_leaves_undeclared_actions_to_the_lint() -> None:
    text = HEAD + "actions: [read]\nrules:\n" + RULE.replace("[read]", "[raed]")
    values = read_source_events(text, enforce_vocabulary=False)
    assert values is not None
    assert _as_source(values) == _checked(text, compiles=True, enforce_vocabulary=False)


def test_quick_reader_reads_a_fleet_sized_policy_as_the_checked_reader() -> None:
    rules = "".join(
        f"  - id: r{i}\n    effect: {'deny' if i % 7 == 0 else 'allow'}\n"
        f"    subjects: [svc:w{i % 50}{', group:line' if i % 5 == 0 else ''}]\n"
        f'    actions: [read, exec]\n    resources: ["/var/lib/w{i}/**"]\n'
        + ("    when:\n      context:\n        zone: [plant-a]\n" if i % 4 == 0 else "")
        for i in range(2_000)
    )
    text = HEAD + "actions: [read, exec]\ngroups:\n  line: [svc:w1]\nrules:\n" + rules
    values = read_source_events(text, enforce_vocabulary=True)
    assert values is not None
    assert _as_source(values) == _checked(text, compiles=True)


def test_the_quick_reader_leaves_no_cycle_for_the_collector() -> None:
    # bundle build pauses the collector: a cycle through the reader would keep every value
    # of the source alive until the collector resumes, and make it scan them all then.
    text = _text("tests/test_policy_source.py")
    gc.collect()
    gc.disable()
    try:
        source = load_policy_source(text, PATH, compiles=False)
        assert read_source_events(text, enforce_vocabulary=True) is not None
        del source
        assert gc.collect() == 0
    finally:
        gc.enable()


_NAMES = st.sampled_from(["a", "eu-1", "svc:a", "svc:b", "group:g", "group:h", "*", "/a/*"])
_WRONG = st.one_of(
    st.sampled_from(
        ["yes", "1", "06:00", "", "~", "*", "-a", "x" * 300, "-a_b", "1h", "a b", "/a"]
    ),
    st.integers(-2, 2),
    st.booleans(),
    st.none(),
    st.lists(_NAMES, max_size=2),
    st.dictionaries(_NAMES, _NAMES, max_size=2),
)


_RARELY = st.sampled_from([False] * 10 + [True] + [False] * 10)
"""True about one time in 20 (a draw at an end of a range is much likelier than that)."""


@st.composite
def _maybe(draw: st.DrawFn, right: st.SearchStrategy[object]) -> object:
    """Mostly a right value, sometimes a wrong one (type, grammar or shape)."""
    return draw(_WRONG) if draw(_RARELY) else draw(right)


def _strings(elements: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(elements, min_size=1, max_size=3)


@st.composite
def _optional_fields(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[object]]) -> dict:
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    result = {key: draw(_maybe(fields[key])) for key in chosen}
    if draw(_RARELY):
        result[draw(st.sampled_from(["extra", "id", ""]))] = draw(_NAMES)
    return result


_ACTIONS = st.sampled_from(["read", "exec", "*", "raed"])
_PARENT = _optional_fields(
    {
        "action": _strings(_ACTIONS),
        "resource": _strings(st.sampled_from(["/a", "/b/**", "a"])),
        "subject": _strings(st.sampled_from(["svc:a", "group:g", "*"])),
        "devices": _strings(st.sampled_from(["d1", "group:x"])),
        "max_age": st.sampled_from(["30s", "2d", "0s"]),
        "max_depth": st.sampled_from([0, 3, 2000, "3"]),
    }
)
_WHEN = _optional_fields(
    {
        "context": st.dictionaries(
            st.sampled_from(["zone", "site", ""]),
            _strings(st.sampled_from(["a", "b"])),
            max_size=2,
        ),
        "time_utc": st.sampled_from(["06:00-22:00", "22:00-06:00", "6-7"]),
        "parent": _PARENT,
    }
)


@st.composite
def _rule(draw: st.DrawFn) -> dict:
    rule = {
        "id": draw(_maybe(st.sampled_from(["r1", "r2", "r3", "r.4"]))),
        "effect": draw(_maybe(st.sampled_from(["allow", "deny"]))),
        "subjects": draw(_maybe(_strings(st.sampled_from(["svc:a", "group:g", "group:h", "*"])))),
        "actions": draw(_maybe(_strings(_ACTIONS))),
        "resources": draw(_maybe(_strings(st.sampled_from(["/a", "/b/**", "/c/*.log"])))),
    }
    if draw(st.booleans()):
        rule["when"] = draw(_WHEN)
    for key in draw(st.lists(st.sampled_from(sorted(rule)), max_size=1)):
        del rule[key]
    return rule


@st.composite
def _policies(draw: st.DrawFn) -> dict:
    target = {"region": draw(_maybe(st.sampled_from(["eu-1", "plant.a_2"])))}
    target |= draw(
        _optional_fields(
            {
                key: st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)
                for key in ("groups", "profiles", "devices")
            }
        )
    )
    policy = {
        "target": draw(_maybe(st.just(target))),
        "rules": draw(_maybe(st.lists(_rule(), max_size=3))),
    }
    policy |= draw(
        _optional_fields(
            {
                "ttl": st.sampled_from(["24h", "90d", "1h"]),
                "max_offline": st.sampled_from(["1h", "0s"]),
                "groups": st.dictionaries(
                    st.sampled_from(["g", "h", "svc:a"]),
                    _strings(st.sampled_from(["svc:a", "uid:1"])),
                    max_size=2,
                ),
                "workloads": st.dictionaries(
                    st.sampled_from(["svc:a", "svc:b", "g"]),
                    _strings(st.sampled_from(["uid:1", "exe:/a", "x"])),
                    max_size=2,
                ),
                "actions": _strings(st.sampled_from(["read", "exec", "*"])),
            }
        )
    )
    for key in draw(st.lists(st.sampled_from(["target", "rules"]), max_size=1)):
        if draw(_RARELY):
            del policy[key]
    return policy


_NOISE = st.text(alphabet="[]{}:,-&*!#|>'\"\n\t %?@`\x07ab", max_size=6)


@st.composite
def _policy_texts(draw: st.DrawFn) -> str:
    """A policy, right or with wrong values, dumped in a random style, maybe spliced with
    YAML's indicators."""
    text = yaml.safe_dump(
        draw(_policies()),
        default_flow_style=draw(st.sampled_from([None, True, False])),
        default_style=draw(st.sampled_from([None, None, "'", '"'])),
        sort_keys=draw(st.booleans()),
        explicit_start=draw(st.booleans()),
    )
    if draw(_RARELY):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(_NOISE) + text[at + draw(st.integers(0, 3)) :]
    return text


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policy_texts(), st.booleans())
def test_generated_sources_read_exactly_as_the_checked_reader(
    text: str, enforce_vocabulary: bool
) -> None:
    expected = _checked(text, compiles=False, enforce_vocabulary=enforce_vocabulary)
    values = read_source_events(text, enforce_vocabulary=enforce_vocabulary)
    if isinstance(expected, PolicySource):
        assert values is not None, "the quick reader must take what the checked reader takes"
        assert _as_source(values) == expected
        assert _key_orders(_as_source(values).policy) == _key_orders(expected.policy)
    else:
        assert values is None
    for compiles in (False, True):
        assert _loaded(text, compiles=compiles, enforce_vocabulary=enforce_vocabulary) == _checked(
            text, compiles=compiles, enforce_vocabulary=enforce_vocabulary
        )

"""The YAML reader composes in C where it can, and behaves exactly as the checked Python
composer everywhere: the same node trees with the same marks, the same refusals with the
same lines (``edge_agent.policy.source``: ``_compose_in_c`` against ``_compose_checked``)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import PolicyError
from edge_agent.policy import source
from edge_agent.policy.source import MAX_YAML_DEPTH, compose_yaml

PATH = "fleet.yaml"

ACCEPTED = [
    ("flow and block", "target: {region: eu-1, groups: [a, b]}\nrules:\n- id: x\n  n: 1\n"),
    ("every scalar style", "a: plain\nb: 'single'\nc: \"double\"\nd: |\n  lit\ne: >\n  fold\n"),
    ("implicit types", "a: yes\nb: 1\nc: 1.5\nd: ~\ne: 06:00\nf: 2024-01-01\ng: ''\n"),
    (
        "every implicit resolver",
        "[~, null, Null, '', true, False, ON, no, 0x1F, 0o17, -0b101, 1_000, 190:20:30, .inf,"
        " -.Inf, .NaN, 6.8523015e+5, 1_000.5, 2001-12-14t21:59:43.10-05:00, 2002-12-14, =, <<,"
        " 'yes', \"1\", +1, 0, 1e3, x, '~']\n",
    ),
    ("merge key", "<<: {a: b}\nc: d\n"),
    ("globs that are not aliases", 'subjects: ["*"]\nresources: ["/a/*", "/b/**"]\n'),
    ("comments and a document start", "# head\n---\na: [x]  # tail\n...\n"),
    ("non-ASCII text", "r\u00e9gion: \u00e9t\u00e9\nemoji: \U0001f600\n"),
    ("empty collections", "a: []\nb: {}\nc:\n"),
    ("complex key", "? [a, b]\n: c\n"),
    ("deepest allowed nesting", "a: " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1)),
    ("a scalar document", "just text\n"),
]

REFUSED = [
    ("alias", "a: [x]\nb: *a\n"),
    ("anchor", "target: &t {region: eu-1}\nrules: []\n"),
    ("anchor and alias", "a: &a [x]\nb: *a\n"),
    ("alias bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"),
    ("explicit tag", "target: {region: !!str eu-1}\n"),
    ("local tag", "a: !thing x\n"),
    ("non-specific tag", "a: ! x\n"),
    ("tag on a list", "a: !!seq [x]\n"),
    ("tag directive", "%TAG !e! tag:example.com,2000:\n---\na: !e!x b\n"),
    ("one level too deep", "a: " + "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH),
    ("far too deep", "a: " + "[" * 100_000 + "]" * 100_000),
    ("deep block nesting", "".join(f"{' ' * i}k{i}:\n" for i in range(40)) + " " * 40 + "v\n"),
    ("two documents", "a: b\n---\nc: d\n"),
    ("unclosed flow", "target: [unclosed\n"),
    ("bad indentation", "a:\n  - b\n - c\n"),
    ("control character", "a: b\x07\n"),
    ("control character after non-ASCII", "r\u00e9gion: x\nrules: []\x07\n"),
    ("error at the end", "target: {region: eu-1}\nrules:\n- a\n- b: c\n  d"),
    ("tab indentation", "a:\n\t- b\n"),
    ("empty", ""),
    ("only a comment", "# nothing\n"),
    ("lone surrogate", "a: [\ud800]\n"),
    ("duplicate anchor", "a: &x 1\nb: &x 2\n"),
    ("an ampersand in a quoted string", 'a: "&x"\nb: *y\n'),
]


def _outcome(compose: object, text: str) -> tuple[str, object]:
    """``("tree", shape)`` or ``("error", (message, path, line, rule))``."""
    try:
        node = compose(text, PATH, "policy source")  # type: ignore[operator]
    except PolicyError as exc:
        return "error", (str(exc), exc.path, exc.line, exc.rule)
    return "tree", _shape(node)


def _reference(text: str, path: str, what: str) -> yaml.Node:
    """The checked Python composer alone, with the checks ``compose_yaml`` makes first."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > source.MAX_POLICY_SOURCE_BYTES or source._SURROGATE.search(text):
        return compose_yaml(text, path, what=what)
    return source._compose_checked(text, path, what)


def _public(text: str, path: str, what: str) -> yaml.Node:
    return compose_yaml(text, path, what=what)


def _shape(node: yaml.Node) -> object:
    """Everything a node carries: kind, tag, style, flow style, both marks, children."""

    def mark(m: yaml.Mark) -> tuple[object, ...]:
        return (m.name, m.index, m.line, m.column, m.buffer, m.pointer)

    common = (type(node).__name__, node.tag, mark(node.start_mark), mark(node.end_mark))
    if isinstance(node, yaml.ScalarNode):
        return (*common, node.style, node.value)
    if isinstance(node, yaml.SequenceNode):
        return (*common, node.flow_style, [_shape(item) for item in node.value])
    return (*common, node.flow_style, [(_shape(k), _shape(v)) for k, v in node.value])


@pytest.mark.parametrize(("name", "text"), ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_c_composer_builds_the_checked_composers_tree_with_the_same_marks(
    name: str, text: str
) -> None:
    c_node = source._compose_in_c(text)
    assert c_node is not None, "the C path must be taken for this text"
    assert _shape(c_node) == _shape(source._compose_checked(text, PATH, "policy source"))
    assert _outcome(_public, text) == _outcome(_reference, text)


@pytest.mark.parametrize(("name", "text"), REFUSED, ids=[case[0] for case in REFUSED])
def test_hostile_yaml_gets_the_checked_composers_error_and_line(name: str, text: str) -> None:
    expected = _outcome(_reference, text)
    assert expected[0] == "error"
    assert _outcome(_public, text) == expected


def test_c_composer_stops_at_the_depth_limit_before_recursing_further() -> None:
    loader = source._CLoader("a: " + "[" * 900 + "]" * 900)
    with pytest.raises(source._TooDeep):
        loader.get_single_node()
    assert loader._depth == MAX_YAML_DEPTH + 1
    loader.dispose()


def test_c_composer_is_used_for_a_generated_10000_rule_policy() -> None:
    rules = "".join(
        f"  - id: r{i}\n    effect: allow\n    subjects: [svc:w{i}]\n"
        f'    actions: [read]\n    resources: ["/var/lib/w{i}/**"]\n'
        for i in range(10_000)
    )
    text = "target: {region: eu-1}\nrules:\n" + rules
    c_node = source._compose_in_c(text)
    assert c_node is not None
    assert _shape(c_node) == _shape(source._compose_checked(text, PATH, "policy source"))


_SCALARS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["*", "&x", "!x", "*x", "yes", "1", "06:00", "~", "- x", "a: b", "#c"]),
    st.integers(),
    st.booleans(),
    st.none(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=20,
)
_NOISE = st.text(alphabet="[]{}:,-&*!#|>'\"\n\t %?@`\x07abc", max_size=8)


@st.composite
def _yaml_texts(draw: st.DrawFn) -> str:
    """YAML dumped in a random style, then maybe cut or spliced with YAML's indicators."""
    text = yaml.safe_dump(
        draw(_VALUES),
        default_flow_style=draw(st.sampled_from([None, True, False])),
        default_style=draw(st.sampled_from([None, "'", '"', "|"])),
        allow_unicode=draw(st.booleans()),
        explicit_start=draw(st.booleans()),
    )
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(_NOISE) + text[at + cut :]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_yaml_texts())
def test_generated_yaml_composes_or_fails_exactly_as_the_checked_composer(text: str) -> None:
    assert _outcome(_public, text) == _outcome(_reference, text)

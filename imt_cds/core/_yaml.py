"""YAML reading for rule files: safe, strict about the YAML 1.1 surprises, and able to point at a line.

YAML 1.1 (what PyYAML implements) reads ``no``, ``on`` and ``off`` as booleans and ``2024-05-29`` as a date. In a
clinical rule file that silently changes meaning (``is: no`` would test ``false``), so only ``true``/``false`` are
booleans here and dates stay text. A document that contains itself (an alias inside its own anchor) is refused. A key
written twice in one mapping is refused (PyYAML keeps the last one silently, so a rule with two ``when:`` would be
evaluated on the second without a word). Everything else is PyYAML's safe loader, with the C implementation when
present.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["YAMLError", "line_of", "load_yaml"]

YAMLError = yaml.YAMLError

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _StrictLoader(_Base):  # type: ignore[misc, valid-type]
    # deep=True builds every mapping's values at once, which is how PyYAML refuses a node that contains itself
    # (`when: &w {all: [*w]}`); a rule file is a tree, and a self-containing one would send every reader of it
    # into endless recursion.
    def construct_mapping(self, node: Any, deep: bool = True) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                # A merge key counts as a key: `<<` written twice is refused like any other key (several maps are
                # merged with one `<<: [*a, *b]`); the keys a merge brings in are not written here, so a key that
                # overrides one of them is not a duplicate.
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key_node.value!r} is written twice in one mapping (first on line "
                        f"{seen[key].line + 1}); say it once", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str | bytes) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader subclass


def line_of(text: str | bytes, path: str | None) -> int | None:
    """The 1-based line of the node at ``path`` (``when.all[2].fact``) in a YAML document, or of its nearest
    existing ancestor; None when the text does not parse."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in _parts(path or ""):
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts

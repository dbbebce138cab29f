"""Bounded YAML reading for scenario and experiment files.

`load_yaml_file` reads a file that must be a regular file of at most `MAX_FILE_BYTES`, decodes it as
strict UTF-8, and parses it with a safe loader that refuses, before anything large is built:

- nesting deeper than `MAX_DEPTH` collections (no RecursionError on 100,000 ``[``),
- more than `MAX_ALIASES` alias uses, recursive aliases, or a document whose aliases expand to more
  than `MAX_NODES` values (the "billion laughs" pattern),
- duplicate keys in a mapping (YAML would silently keep the last one), named by their field path,
- keys that are not strings (``1:``, ``null:``, ``on:``, a list as a key).

Every refusal is a `YamlInputError` (a ``ValueError``) whose message names the file, the field path
where one is known, and the line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
import yaml.cyaml
from yaml.events import AliasEvent, MappingEndEvent, ScalarEvent, SequenceEndEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "YamlInputError",
    "load_yaml_file",
    "load_yaml_text",
    "decode_utf8",
    "read_regular_file",
]

MAX_FILE_BYTES = (
    1024 * 1024
)  # a 1,000-SKU scenario with every attribute listed is ~100 KB; parsing 1 MiB takes ~1 s
MAX_DEPTH = 32  # nested collections (the scenario schema needs 6)
MAX_ALIASES = 1_000  # alias uses (*name) per document
MAX_NODES = 1_000_000  # values in the document once every alias is expanded
MAX_SCALAR_CHARS = 100_000  # one scalar (a name, a number)

_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


class YamlInputError(ValueError):
    """A YAML input that is refused; the message names the file, the field path and the line."""


def _fmt_path(path: list) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "<root>"


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _line(node_or_event) -> str:
    m = getattr(node_or_event, "start_mark", None)
    return f" (line {m.line + 1})" if m is not None else ""


class _BoundedComposer(yaml.composer.Composer):
    """`yaml.composer.Composer` with a depth bound, an alias budget, expanded-size accounting and
    duplicate-key detection; the field path of the node being composed is kept for the messages."""

    def _bounded_init(self) -> None:
        self._path: list = []
        self._aliases = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> values it expands to
        self._open: set[int] = set()  # anchored collections still being composed
        self._total = 0
        self._scalar_paths: dict[int, str] = {}

    def _refuse(self, what: str, where=None) -> None:
        raise YamlInputError(f"{_fmt_path(self._path)}: {what}{_line(where) if where is not None else ''}")

    def _count(self, n: int, where) -> None:
        self._total += n
        if self._total > MAX_NODES:
            self._refuse(f"the document expands to more than {MAX_NODES:,} values (aliases included)", where)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                self._refuse(f"more than {MAX_ALIASES:,} alias uses (*name) in one document", event)
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) in self._open:
                self._refuse(f"alias *{event.anchor} refers to a collection that contains it", event)
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1), event)
            return node
        if isinstance(event, ScalarEvent):
            if len(event.value) > MAX_SCALAR_CHARS:
                self._refuse(f"a value longer than {MAX_SCALAR_CHARS:,} characters", event)
        elif len(self._path) >= MAX_DEPTH:
            self._refuse(f"nested deeper than {MAX_DEPTH} levels", event)
        before = self._total
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._sizes[id(node)] = self._total - before
            self._open.discard(id(node))
        return node

    def compose_scalar_node(self, anchor):
        node = super().compose_scalar_node(anchor)
        self._count(1, node)
        self._scalar_paths[id(node)] = _fmt_path(self._path)
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # an int of 5,000 digits, a 13th month, ...
            if isinstance(exc, YamlInputError):
                raise
            where = self._scalar_paths.get(id(node), "<value>")
            raise YamlInputError(
                f"{where}: YAML cannot convert {_short(node.value)}: {exc}{_line(node)}"
            ) from None

    def compose_sequence_node(self, anchor):
        start = self.get_event()
        self._count(1, start)
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
            self._open.add(id(node))
        index = 0
        while not self.check_event(SequenceEndEvent):
            self._path.append(index)
            node.value.append(self.compose_node(node, index))
            self._path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor):
        start = self.get_event()
        self._count(1, start)
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
            self._open.add(id(node))
        seen: dict[tuple, ScalarNode] = {}
        while not self.check_event(MappingEndEvent):
            key = self.compose_node(node, None)
            label = key.value if isinstance(key, ScalarNode) else "<key>"
            if not isinstance(key, ScalarNode):
                self._path.append(label)
                self._refuse("a key must be a plain string, not a list or a mapping", key)
            if key.tag not in (_STR, _MERGE):  # 1, null, yes/no/on/off, 2024-01-01 as keys
                self._path.append(label)
                self._refuse(f"key {label!r} is not a string (quote it if it is meant as one)", key)
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                ident = (key.tag, key.value)
                if ident in seen:
                    self._path.append(label)
                    first = seen[ident].start_mark.line + 1
                    self._refuse(
                        f"duplicate key {label!r} (first at line {first}; YAML would silently keep the last)",
                        key,
                    )
                seen[ident] = key
            self._path.append(label)
            value = self.compose_node(node, key)
            self._path.pop()
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        return node


if yaml.__with_libyaml__:  # libyaml produces the events (fast); composition stays in Python (bounded)

    class _Loader(
        _BoundedComposer, yaml.cyaml.CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
    ):
        def __init__(self, stream):
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._bounded_init()

else:  # pragma: no cover - pure-Python PyYAML

    class _Loader(_BoundedComposer, yaml.SafeLoader):  # type: ignore[no-redef]
        def __init__(self, stream):
            yaml.SafeLoader.__init__(self, stream)
            self._bounded_init()


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document from ``text`` with the bounds above; errors name ``source``."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except YamlInputError as exc:
        raise YamlInputError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{source}: not valid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar the constructor cannot convert
        raise YamlInputError(f"{source}: a value YAML cannot convert: {exc}") from None
    except RecursionError:  # pragma: no cover - the depth bound keeps far from the recursion limit
        raise YamlInputError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()


def read_regular_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a readable regular file of at most ``max_bytes`` (checked before reading)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise YamlInputError(f"{p}: no such {what}") from None
    except OSError as exc:
        raise YamlInputError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise YamlInputError(f"{p}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise YamlInputError(f"{p}: not a regular file (a device, pipe or socket), so not a {what}")
    if st.st_size > max_bytes:
        raise YamlInputError(f"{p}: the {what} is {st.st_size:,} bytes; the limit is {max_bytes:,} bytes")
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise YamlInputError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise YamlInputError(f"{p}: the {what} is over the limit of {max_bytes:,} bytes")
    return data


def decode_utf8(data: bytes, source: str, yaml_paths: bool = False) -> str:
    """Strict UTF-8 (a leading byte-order mark is dropped); the error names the line and column, and
    with ``yaml_paths`` the field whose value holds the first bad byte (when the rest parses)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        col = exc.start - (head.rfind(b"\n") + 1) + 1
        where = ""
        if yaml_paths:
            text = data.decode("utf-8-sig", errors="replace")
            path = _path_at(text, len(head.decode("utf-8-sig")))
            where = f" in {path}" if path else " (not inside a field's value)"
        raise YamlInputError(
            f"{source}: not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {col}{where} "
            f"(byte offset {exc.start}); save the file as UTF-8"
        ) from None


def _path_at(text: str, index: int) -> str | None:
    """Field path of the innermost value whose text spans character ``index`` (None if none does)."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except Exception:  # the rest of the file does not parse either: the line and column must do
        return None
    finally:
        loader.dispose()
    best, stack = None, [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is None or not node.start_mark.index <= index < max(
            node.end_mark.index, node.start_mark.index + 1
        ):
            continue
        best = path
        if isinstance(node, MappingNode):
            for k, v in node.value:
                label = k.value if isinstance(k, ScalarNode) else "<key>"
                stack += [(k, [*path, label]), (v, [*path, label])]
        elif isinstance(node, SequenceNode):
            stack += [(v, [*path, i]) for i, v in enumerate(node.value)]
    return _fmt_path(best) if best else None


def load_yaml_file(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Read, decode and parse a bounded YAML file (see the module docstring)."""
    data = read_regular_file(path, what)
    return load_yaml_text(decode_utf8(data, str(path), yaml_paths=True), str(path))

"""Read a YAML file whose one long top-level list (devices.yaml's `devices:`) is taken item by item.

`yaml.safe_load` composes a node tree of the whole document before it builds a single object: for
100,000 devices that peaks at ~700 MB, and the process keeps most of it afterwards (freed, but in
arenas fragmented by what was built meanwhile). Here the list's items are composed, built and
handed to the caller one at a time, so the peak is one item's nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent

from gridgate.config import existing_file, yaml_error

if yaml.__with_libyaml__:

    class _Loader(Composer, yaml.CSafeLoader):  # type: ignore[misc]
        """libyaml's parser and the safe constructor, composed node by node (Composer is in Python)."""

        def __init__(self, stream: Any) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            Composer.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml: the pure-Python loader, same behaviour

    class _Loader(yaml.SafeLoader):  # type: ignore[no-redef]
        pass


def read_yaml_items(path: str | Path, key: str, item: Callable[[int, Any], None]) -> tuple[Any, bool]:
    """The document of `path` as `read_yaml` reads it, except the list under the top-level `key`.

    Each item of that list goes to `item(index, value)` as soon as it is read, and the key is left
    out of the document; the flag says so. A document that is no mapping, or whose `key` holds no
    list, is returned whole (flag False) for the caller's validation to report.
    """
    p = existing_file(path)
    with p.open("rb") as f:
        loader = _Loader(f)
        try:
            return _read(loader, key, item)
        except yaml.YAMLError as exc:
            raise yaml_error(p, exc) from exc
        finally:
            loader.dispose()


def _read(loader: _Loader, key: str, item: Callable[[int, Any], None]) -> tuple[Any, bool]:
    loader.get_event()  # StreamStart
    if loader.check_event(yaml.StreamEndEvent):
        return None, False  # an empty file
    loader.get_event()  # DocumentStart
    if not loader.check_event(MappingStartEvent) or _special(loader):
        # not a plain mapping: the ordinary way, whole
        return loader.construct_document(_document_rest(loader)), False
    loader.get_event()
    doc: dict[Any, Any] = {}
    streamed = False
    while not loader.check_event(MappingEndEvent):
        name_node = loader.compose_node(None, None)
        name = loader.construct_document(name_node)
        if name == key and streamed:
            raise yaml.constructor.ConstructorError(
                None, None, f"found the key {key!r} a second time; keep one list", name_node.start_mark
            )
        if name == key and loader.check_event(SequenceStartEvent) and not _special(loader):
            loader.get_event()
            index = 0
            while not loader.check_event(SequenceEndEvent):
                item(index, _item(loader))
                index += 1
            loader.get_event()
            streamed = True
            doc.pop(key, None)
            continue
        doc[name] = loader.construct_document(loader.compose_node(None, None))
    loader.get_event()  # MappingEnd
    loader.get_event()  # DocumentEnd
    if not loader.check_event(yaml.StreamEndEvent):
        raise yaml.composer.ComposerError(
            "expected a single document in the stream", None, "but found another document", None
        )
    return doc, streamed


def _item(loader: _Loader) -> Any:
    """One list item. A mapping (every device) is built straight from the parser's events, its plain
    and quoted scalars without nodes, ~3x faster; any other value goes through nodes as usual."""
    start = loader.peek_event()
    if type(start) is not MappingStartEvent or start.anchor is not None or start.tag is not None:
        return loader.construct_document(loader.compose_node(None, None))
    loader.get_event()
    given: dict[Any, Any] = {}
    merged: list[dict[Any, Any]] = []  # `<<: *base` values: defaults for the keys given
    while not loader.check_event(MappingEndEvent):
        key_event = loader.peek_event()
        if _is_merge_key(key_event):
            loader.get_event()
            where = loader.peek_event().start_mark
            base = loader.construct_document(loader.compose_node(None, None))
            bases = base if isinstance(base, list) else [base]
            if not all(isinstance(b, dict) for b in bases):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", start.start_mark, "a merge key expects mappings", where
                )
            merged.extend(bases)  # the first one given wins, as in safe_load
            continue
        key = _value(loader)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", start.start_mark, "found unhashable key", key_event.start_mark
            )
        given[key] = _value(loader)
    loader.get_event()
    if not merged:
        return given
    out: dict[Any, Any] = {}
    for base in reversed(merged):
        out.update(base)
    return out | given


def _value(loader: _Loader) -> Any:
    event = loader.peek_event()
    if type(event) is not ScalarEvent or event.anchor is not None or event.tag is not None:
        return loader.construct_document(loader.compose_node(None, None))
    loader.get_event()
    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag == _STR:
        return event.value
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    return loader.construct_document(node)


def _is_merge_key(event: Any) -> bool:
    return (
        type(event) is ScalarEvent
        and event.anchor is None
        and event.tag is None
        and event.implicit[0]
        and event.value == "<<"
    )


_STR = "tag:yaml.org,2002:str"


def _special(loader: _Loader) -> bool:
    """The next collection carries an anchor (an alias elsewhere may need it whole) or a tag."""
    event = loader.peek_event()
    return event.anchor is not None or event.tag is not None


def _document_rest(loader: _Loader) -> yaml.Node:
    node = loader.compose_node(None, None)
    loader.get_event()  # DocumentEnd
    if not loader.check_event(yaml.StreamEndEvent):
        raise yaml.composer.ComposerError(
            "expected a single document in the stream", None, "but found another document", None
        )
    return node

"""gridgate/yaml_items.py: a long top-level list read item by item, the rest as `read_yaml` reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gridgate.config import ConfigError, read_yaml
from gridgate.yaml_items import read_yaml_items


def streamed(path: Path, key: str = "devices") -> tuple[Any, list[Any]]:
    items: list[tuple[int, Any]] = []
    doc, was_streamed = read_yaml_items(path, key, lambda i, v: items.append((i, v)))
    assert [i for i, _ in items] == list(range(len(items)))
    values = [v for _, v in items]
    if was_streamed:
        doc = {**doc, key: values}
    else:
        assert values == []
    return doc, values


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(["profiles", "devices", "other", "x"]), values, max_size=4)


@settings(max_examples=60, deadline=None)
@given(doc=documents | values, flow=st.booleans())
def test_same_document_as_safe_load(tmp_path_factory: pytest.TempPathFactory, doc: Any, flow: bool) -> None:
    path = tmp_path_factory.mktemp("y") / "devices.yaml"
    path.write_text(yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True))
    assert streamed(path)[0] == read_yaml(path)


def test_items_arrive_one_by_one_with_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(
        "base: &base {type: manhole, lat: 30.2, lon: 120.1}\n"
        "devices:\n"
        "  - {<<: *base, id: MH-1}\n"
        "  - &two {<<: *base, id: MH-2, reporting_interval_s: 60}\n"
        "  - *two\n"
        "profiles: {}\n"
    )
    doc, items = streamed(path)
    assert doc == read_yaml(path)
    assert [d["id"] for d in items] == ["MH-1", "MH-2", "MH-2"] and items[1]["type"] == "manhole"


@pytest.mark.parametrize(
    "text",
    ["", "- a\n- b\n", "devices: {a: 1}\n", "devices: &all [1, 2]\nagain: *all\n", "devices: !!seq [1]\n"],
)
def test_what_is_no_plain_list_under_the_key_comes_back_whole(tmp_path: Path, text: str) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    doc, was_streamed = read_yaml_items(path, "devices", lambda i, v: pytest.fail("nothing is streamed"))
    assert not was_streamed and doc == read_yaml(path)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  - {id: MH-1}\n  - {id: MH-2\n")
    with pytest.raises(ConfigError, match=r"line 4, column 1: not valid YAML"):
        read_yaml_items(path, "devices", lambda i, v: None)


def test_a_second_list_under_the_same_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text("devices: [1]\nprofiles: {}\ndevices: [2]\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: .*'devices' a second time"):
        read_yaml_items(path, "devices", lambda i, v: None)


def test_a_missing_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_yaml_items(tmp_path / "nope.yaml", "devices", lambda i, v: None)


@pytest.mark.parametrize(
    "item",
    [
        "{<<: {a: 1}, b: 2}",
        "{<<: [{a: 1}, {a: 2, c: 3}], a: 9}",
        "{<<: {a: 1, b: 1}, <<: {a: 2}, c: 3}",
        "{'<<': 1, b: !!str 3, c: [4]}",
        "{a: {b: [1, 2]}, 'q': \"x\", n: ~, t: yes, f: 1.5e3, i: 0x1f, d: 2024-01-01}",
        "[1, {a: 1}]",
        "plain",
    ],
)
def test_each_item_as_safe_load_builds_it(tmp_path: Path, item: str) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(f"devices:\n  - {item}\n  - {item}\n")
    doc, items = streamed(path)
    assert doc == read_yaml(path) and len(items) == 2


@pytest.mark.parametrize("item", ["{a: <<}", "{[1]: 2}", "{<<: 3}"])
def test_an_item_safe_load_refuses_is_refused(tmp_path: Path, item: str) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(f"devices:\n  - {item}\n")
    with pytest.raises(ConfigError):
        read_yaml(path)
    with pytest.raises(ConfigError, match="line 2"):
        read_yaml_items(path, "devices", lambda i, v: None)

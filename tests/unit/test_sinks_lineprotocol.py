"""Line protocol encoding: known strings, and round trips through parsers of both server dialects."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sinks.lineprotocol import (
    encode,
    encode_v1,
    escape_string_field,
    format_field_value,
    make_encoder,
)
from gridgate.models import Point

# -- a small parser: InfluxDB 2.x / VictoriaMetrics rules (v1 rules with `v1=True`) ----------------


def _scan(s: str, i: int, stops: str, v1: bool) -> tuple[str, int]:
    """Read an escaped token up to an unescaped stop character."""
    specials = ",= " if v1 else ",= \\"
    out = []
    while i < len(s) and s[i] not in stops:
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append(n if n in specials else c + n)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), i


def _field_value(s: str, i: int) -> tuple[object, int]:
    if s[i] == '"':
        out = []
        i += 1
        while s[i] != '"':
            if s[i] == "\\" and s[i + 1] in '\\"':
                out.append(s[i + 1])
                i += 2
            else:
                out.append(s[i])
                i += 1
        return "".join(out), i + 1
    j = i
    while j < len(s) and s[j] not in ", ":
        j += 1
    tok = s[i:j]
    if tok in ("true", "false"):
        return tok == "true", j
    if tok.endswith("i"):
        return int(tok[:-1]), j
    return float(tok), j


def parse(line: str, v1: bool = False) -> Point:
    m, i = _scan(line, 0, ", ", v1)
    tags: dict[str, str] = {}
    while line[i] == ",":
        k, i = _scan(line, i + 1, "=", v1)
        v, i = _scan(line, i + 1, ", ", v1)
        tags[k] = v
    assert line[i] == " "
    fields: dict[str, object] = {}
    while True:
        k, i = _scan(line, i + 1, "=", v1)
        v, i = _field_value(line, i + 1)
        fields[k] = v
        if line[i] == " ":
            break
        assert line[i] == ","
    return Point(m, tags, fields, int(line[i + 1 :]))  # type: ignore[arg-type]


# -- known strings ---------------------------------------------------------------------------


def test_typical_point() -> None:
    p = Point(
        "telemetry",
        {"device_type": "manhole", "device_id": "mh-1", "grid_id": "g1"},
        {"tilt": 1.5, "battery": 87, "open": False, "note": "ok"},
        1_700_000_000_000_000_000,
    )
    assert encode(p) == (
        "telemetry,device_id=mh-1,device_type=manhole,grid_id=g1 "
        'tilt=1.5,battery=87i,open=false,note="ok" 1700000000000000000'
    )
    assert encode_v1(p) == encode(p)


@pytest.mark.parametrize(
    ("point", "line"),
    [
        (Point("a b,c=d", {}, {"f": 1.0}, 1), "a\\ b\\,c=d f=1.0 1"),
        (Point("m", {"k y,=": "v w,=x"}, {"f": 1.0}, 1), "m,k\\ y\\,\\==v\\ w\\,\\=x f=1.0 1"),
        (Point("m", {}, {"f k,=": 1.0}, 1), "m f\\ k\\,\\==1.0 1"),
        (Point("m", {}, {"s": 'say "hi" \\o/'}, 1), 'm s="say \\"hi\\" \\\\o/" 1'),
        (Point("m", {"t": "a\nb"}, {"f": True}, 1), "m,t=a\\nb f=true 1"),
        (
            Point("m", {}, {"big": 2**63, "neg": -(2**63)}, 1),
            "m big=9.223372036854776e+18,neg=-9223372036854775808i 1",
        ),
        (Point("m", {}, {"small": 1e-7, "x": 3}, 1), "m small=1e-07,x=3i 1"),
    ],
)
def test_escaping(point: Point, line: str) -> None:
    assert encode(point) == line


def test_unwritable_values_are_left_out() -> None:
    p = Point("m", {"empty": "", "": "x", "t": "v"}, {"n": None, "nan": math.nan, "inf": math.inf, "f": 2}, 5)  # type: ignore[dict-item]
    assert encode(p) == "m,t=v f=2i 5"
    assert encode(Point("m", {}, {"nan": math.nan}, 1)) is None
    assert encode(Point("", {}, {"f": 1}, 1)) is None


def test_backslashes_per_dialect() -> None:
    p = Point("m\\", {"t": "a\\b", "u": "c\\,d", "w": "e\\"}, {"f": 1}, 1)
    assert encode(p) == "m\\\\,t=a\\\\b,u=c\\\\\\,d,w=e\\\\ f=1i 1"
    # 1.x: plain backslashes as they are, padded before an escape, trailing ones dropped
    assert encode_v1(p) == "m,t=a\\b,u=c\\\\\\,d,w=e f=1i 1"
    assert encode_v1(Point("m", {"t": "\\\\"}, {"f": 1}, 1)) == "m f=1i 1"


def test_field_value_formats() -> None:
    assert format_field_value(True) == "true"
    assert format_field_value(7) == "7i"
    assert format_field_value(0.1) == "0.1"
    assert format_field_value(None) is None
    assert format_field_value(float("nan")) is None
    assert escape_string_field('a"\\') == '"a\\"\\\\"'

    class Level(int):
        pass

    assert format_field_value(Level(3)) == "3i"


# -- round trips -----------------------------------------------------------------------------

_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\n\r\t"), min_size=1, max_size=12
)
_name = _text.filter(lambda s: not s.startswith("#"))
_value = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
)
_points = st.builds(
    Point,
    measurement=_name,
    tags=st.dictionaries(_name, _text, max_size=4),
    fields=st.dictionaries(_name, _value, min_size=1, max_size=4),
    time_ns=st.integers(min_value=-(2**62), max_value=2**63 - 1),
)


@settings(max_examples=250)
@given(_points)
def test_v2_round_trip(p: Point) -> None:
    line = encode(p)
    assert line is not None
    back = parse(line)
    assert back == p


@settings(max_examples=250)
@given(
    _points.filter(
        lambda p: "\\" not in p.measurement + "".join(p.tags) + "".join(p.tags.values()) + "".join(p.fields)
    )
)
def test_v1_round_trip_without_backslashes(p: Point) -> None:
    line = encode_v1(p)
    assert line is not None
    assert parse(line, v1=True) == p


@settings(max_examples=200)
@given(_points)
def test_v1_always_parses_with_the_same_shape(p: Point) -> None:
    line = encode_v1(p)
    if line is None:  # only trailing backslashes in the measurement
        assert not p.measurement.rstrip("\\")
        return
    back = parse(line, v1=True)
    # names may lose trailing backslashes (and then coincide), never structure: values stay exact
    assert len(back.tags) <= len(p.tags)
    assert 1 <= len(back.fields) <= len(p.fields)
    assert all(any(v == w or (v != v and w != w) for w in p.fields.values()) for v in back.fields.values())
    assert back.time_ns == p.time_ns


def test_encoders_have_separate_caches() -> None:
    enc = make_encoder("v2")
    p = Point("m", {"t": "x\\y"}, {"f": 1}, 1)
    assert enc(p) == enc(p) == "m,t=x\\\\y f=1i 1"

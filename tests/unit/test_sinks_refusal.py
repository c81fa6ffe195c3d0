"""What a server's refusal says about each line of a batch (`influx_refusal`), and `redact`."""

from __future__ import annotations

from gateway.sinks.base import influx_refusal, redact

LINES = ["m,d=1 v=1 1", "bad one", "m,d=2 v=2 2", "it's: odd': x", "m,d=3 v=3 3"]


def test_influx1_parse_errors_in_a_partial_write_name_the_lines_and_the_rest_is_stored() -> None:
    msg = (
        "partial write: unable to parse 'bad one': invalid field format\n"
        "unable to parse 'it's: odd': x': invalid field format dropped=0"
    )
    refused, resend = influx_refusal(msg, LINES)
    assert refused == {
        1: "unable to parse 'bad one': invalid field format",
        3: "unable to parse 'it's: odd': x': invalid field format",
    }
    assert resend == []


def test_influx1_type_conflict_names_no_line_so_the_batch_must_be_split() -> None:
    msg = (
        'partial write: field type conflict: input field "v" on measurement "m" is type float, '
        "already exists as type boolean dropped=1"
    )
    assert influx_refusal(msg, LINES) == ({}, None)


def test_influx1_every_line_dropped_is_settled_without_splitting() -> None:
    msg = "partial write: field type conflict: ... dropped=5"
    refused, resend = influx_refusal(msg, LINES)
    assert sorted(refused) == [0, 1, 2, 3, 4] and resend == []
    assert all("type conflict" in why for why in refused.values())


def test_influx1_all_lines_unparsable_without_partial_write() -> None:
    msg = "unable to parse 'a': invalid field format\nunable to parse 'b': invalid field format"
    refused, resend = influx_refusal(msg, ["a", "b"])
    assert sorted(refused) == [0, 1] and resend == []


def test_a_parse_error_quoting_no_line_of_the_batch_is_not_trusted() -> None:
    msg = "partial write: unable to parse 'something else': bad dropped=0"
    assert influx_refusal(msg, LINES) == ({}, None)


def test_victoriametrics_too_long_line_stores_what_came_before_it() -> None:
    long = 'm,d=4 s="' + "x" * 300 + '" 4'
    lines = ["m v=1 1", long, "m v=2 2", long, "m v=3 3"]
    msg = "remoteAddr: 127.0.0.1; cannot read influx line protocol data: too long line: more than 256 bytes"
    refused, resend = influx_refusal(msg, lines)
    assert sorted(refused) == [1, 3]
    assert refused[1] == "too long line: more than 256 bytes"
    assert resend == [2, 4]


def test_redact_removes_credentials() -> None:
    text = "POST http://admin:hunter2@db:8086/write?db=x&u=admin&p=hunter2 token=abc: refused"
    clean = redact(text)
    assert "hunter2" not in clean and "abc" not in clean
    assert "db:8086/write" in clean

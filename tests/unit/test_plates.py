"""Licence plates: the grammar and its normalisation (property tests on hostile strings), the stay
bookkeeping (reads only at rest and at dwell exceeded; the same plate folds a new stay into the
earlier one), and the real PP-OCRv4 reader on rendered plates of the three colours."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.rules import CameraRules
from detectors.zones import NoParkingZone
from edge.config import PlatesConfig
from edge.plates import PlateRead, PlateReader, RapidOcrEngine, plate_confidence
from edge.stay_plates import StayPlates, vehicle_crop
from gateway.edge_ingest import to_event
from gridgate.models import EdgeEventMessage, EdgePhase, EvidenceRef, Location
from gridgate.plates import (
    AUTHORITY,
    NEV_LETTERS,
    PROVINCES,
    SEPARATORS,
    SERIAL,
    PlateColour,
    is_plate,
    normalise,
)
from tests.unit.test_detectors_rules import CAR, SQUARE, T0, obj

UTC = ZoneInfo("UTC")
DIGITS = "0123456789"

provinces = st.sampled_from(PROVINCES)
letters = st.sampled_from(AUTHORITY)
serial = st.text(st.sampled_from(SERIAL), min_size=5, max_size=5)
small_nev = st.tuples(
    st.sampled_from(NEV_LETTERS),
    st.sampled_from(SERIAL),
    st.text(st.sampled_from(DIGITS), min_size=4, max_size=4),
)
large_nev = st.tuples(st.text(st.sampled_from(DIGITS), min_size=5, max_size=5), st.sampled_from(NEV_LETTERS))
plates = st.one_of(
    st.builds(lambda p, a, s: p + a + s, provinces, letters, serial),
    st.builds(lambda p, a, t: p + a + "".join(t), provinces, letters, small_nev),
    st.builds(lambda p, a, t: p + a + "".join(t), provinces, letters, large_nev),
)


# -- grammar ----------------------------------------------------------------------------------------


@given(plates, st.sampled_from(["", "·", " ", "-", "•"]))
def test_valid_plates_round_trip_with_any_separator(plate: str, sep: str) -> None:
    assert is_plate(plate)
    assert normalise(plate) == plate
    assert normalise(plate[:2] + sep + plate[2:]) == plate
    assert normalise(plate.lower()) == plate


@given(plates)
def test_o_and_i_in_the_serial_read_as_zero_and_one(plate: str) -> None:
    misread = plate[:2] + plate[2:].replace("0", "O").replace("1", "I")
    assert normalise(misread) == plate


@settings(max_examples=400)
@given(
    st.text(st.sampled_from(PROVINCES[:4] + AUTHORITY + DIGITS + "OI·- 学警港X"), max_size=10)
    | st.text(max_size=12)
)
def test_random_strings_are_a_plate_only_as_the_grammar_reads_them(raw: str) -> None:
    """Whatever normalise returns is a well-formed plate, made from `raw` by dropping separators and
    reading I/O in the serial as 1/0: never a guess at another plate."""
    got = normalise(raw)
    if got is None:
        return
    assert is_plate(got)
    stripped = SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()
    assert got[:2] == stripped[:2] and got[2:] == stripped[2:].replace("O", "0").replace("I", "1")


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("京A·12345", "京A12345"),
        ("粤B D12345", "粤BD12345"),  # small new-energy car
        ("粤B12345F", "粤B12345F"),  # large new-energy vehicle
        ("沪CIO3A7", "沪C103A7"),
        ("京O12345", None),  # the authority letter is never O (nor a 0)
        ("京A1234", None),  # too short
        ("京A123456", None),  # 8 characters must be new-energy
        ("粤BDX234Y", None),  # new-energy: the last four are digits
        ("AA12345", None),  # no province character
        ("使A12345", None),  # embassy plates are not read here
        ("", None),
    ],
)
def test_grammar_cases(raw: str, want: str | None) -> None:
    assert normalise(raw) == want


def test_confidence_is_the_least_sure_plate_character_separators_aside() -> None:
    assert plate_confidence("京A·12345", [0.99, 0.98, 0.2, 0.97, 0.9, 0.99, 0.99, 0.95]) == 0.9
    assert plate_confidence("", []) == 0.0


# -- stays and their plates -------------------------------------------------------------------------


class FakeReader:
    """A reader that reads what it is told, and counts."""

    def __init__(self, text: str, confidence: float = 0.97) -> None:
        self.text, self.confidence, self.crops = text, confidence, 0

    def read(self, crop: np.ndarray) -> PlateRead | None:
        self.crops += 1
        strip = np.zeros((48, 150, 3), np.uint8)
        return PlateRead(self.text, "blue", self.confidence, (0, 0, 120, 38), 120.0, strip)


def zone(**kw: object) -> NoParkingZone:
    return NoParkingZone(name="kerb", points=SQUARE, dwell_s=60, absent_grace_s=30, **kw)


def stay_plates(reader: FakeReader, z: NoParkingZone, min_confidence: float = 0.9) -> StayPlates:
    return StayPlates("cam", reader, PlatesConfig(min_confidence=min_confidence), [z], 85)


def run(rules: CameraRules, plates: StayPlates, steps: list[tuple[float, list]]) -> tuple[list, set[str]]:
    """The signals of these analyses, and the stays folded into earlier ones."""
    image = np.full((360, 640, 3), 90, np.uint8)
    signals, folded = [], set()
    for t, objects in steps:
        res = rules.step(objects, t)
        folded |= plates.observe(res.snapshots, lambda at: (at, image), rules)
        signals += res.signals
    return signals, folded


def test_plates_are_read_at_rest_and_at_dwell_exceeded_only() -> None:
    z = zone()
    rules, reader = CameraRules([z], UTC), FakeReader("京A12345")
    plates = stay_plates(reader, z)
    signals, _ = run(rules, plates, [(T0 + i * 2.0, [obj(1, CAR)]) for i in range(60)])
    assert [s.action for s in signals][:1] == ["raise"]
    assert reader.crops == 2  # 60 analyses, two reads
    (key,) = rules.parking["kerb"].candidates
    assert plates.measurements(key) == {"plate": "京A12345", "plate_confidence": 0.97, "plate_colour": "blue"}
    pic = plates.picture(key)
    assert pic is not None and pic.name == "plate.jpg" and pic.data[:2] == b"\xff\xd8"


def test_reads_under_the_bar_are_no_plate_and_zones_can_opt_out() -> None:
    z = zone()
    rules, reader = CameraRules([z], UTC), FakeReader("京A12345", confidence=0.5)
    plates = stay_plates(reader, z, min_confidence=0.9)
    run(rules, plates, [(T0 + i * 2.0, [obj(1, CAR)]) for i in range(40)])
    (key,) = rules.parking["kerb"].candidates
    assert plates.measurements(key) == {} and plates.picture(key) is None
    off = zone(read_plates=False)
    rules, reader = CameraRules([off], UTC), FakeReader("京A12345")
    run(rules, stay_plates(reader, off), [(T0 + i * 2.0, [obj(1, CAR)]) for i in range(40)])
    assert reader.crops == 0


def test_same_plate_after_a_track_switch_is_the_same_stay() -> None:
    """The tracker loses the parked car and finds it again under a new id, its box shifted too far for
    the overlap rule (a van passing in front): the plate says it is the same car, so no second event."""
    z = zone()
    rules, reader = CameraRules([z], UTC), FakeReader("京A12345")
    plates = stay_plates(reader, z)
    shifted = (0.16, 0.62, 0.38, 0.82)  # IoU with CAR < reassociate_iou
    steps = [(T0 + i * 2.0, [obj(1, CAR)]) for i in range(10)]
    steps += [(T0 + 20 + i * 2.0, [obj(7, shifted)]) for i in range(40)]
    signals, folded = run(rules, plates, steps)
    raises = [s for s in signals if s.action == "raise"]
    assert len(raises) == 1 and raises[0].key == "kerb:1" and raises[0].started_at == T0
    assert folded == {"kerb:2"}
    state = rules.parking["kerb"]
    assert list(state.candidates) == ["kerb:1"] and state.by_track == {7: "kerb:1"}
    # another plate there is another car: its own stay
    rules, reader = CameraRules([z], UTC), FakeReader("京A12345")
    plates = stay_plates(reader, z)
    run(rules, plates, steps[:10])
    reader.text = "沪B99999"
    signals, folded = run(rules, plates, steps[10:])
    assert folded == set() and [s.key for s in signals if s.action == "raise"] == ["kerb:2"]


def test_vehicle_crop_takes_a_margin_and_stays_in_the_frame() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    assert vehicle_crop(img, (0.0, 0.5, 0.5, 1.0)).shape == (53, 106, 3)


def test_missing_ocr_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    with pytest.raises(RuntimeError, match=r"pip install 'gridgate\[edge\]'"):
        RapidOcrEngine()


class EchoEngine:
    """An OCR engine that reads `said` on every strip, and finds one text line on the whole crop."""

    def __init__(self, said: str) -> None:
        self.said = said

    def detect(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        return [np.array([[0, 0], [w, 0], [w, h / 3], [0, h / 3]], np.float32)]

    def recognise(self, strips: Sequence[np.ndarray]) -> list[tuple[str, list[float]]]:
        return [(self.said, [0.99] * len(self.said)) for _ in strips]


@settings(max_examples=60)
@given(
    st.integers(1, 80),
    st.integers(1, 160),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["京A12345", "粤BD12345", "HELLO", "", "京A1234"]),
)
def test_reader_survives_any_crop_and_reports_only_plates(h: int, w: int, seed: int, said: str) -> None:
    rng = np.random.default_rng(seed)
    crop = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if seed % 3 == 0:  # a plate-blue block on it: the colour localiser's path
        crop[h // 3 : h // 3 + max(1, h // 4), w // 4 : w // 4 + max(1, w // 2)] = (160, 70, 0)
    got = PlateReader(EchoEngine(said)).read(crop)
    assert got is None or (is_plate(got.text) and got.text == said and 0 <= got.confidence <= 1)


# -- the real reader on rendered plates ----------------------------------------------------------


def test_ocr_models_load_and_read_with_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PP-OCRv4 models are files inside the wheel: loading and reading open no socket."""
    pytest.importorskip("rapidocr_onnxruntime")
    import socket

    from detectors.plates_render import plate_sample

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("plate reading tried to reach the network")

    monkeypatch.setattr(socket, "socket", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    s = plate_sample(17, colour="blue", width_px=150, light="day")
    got = PlateReader(RapidOcrEngine()).read(s.crop)
    assert got is not None and got.text == s.text


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    pytest.importorskip("rapidocr_onnxruntime")
    return PlateReader(RapidOcrEngine())


@pytest.mark.parametrize(
    ("seed", "colour", "light"),
    [
        (17, "blue", "day"),
        (12, "yellow", "dusk"),
        (13, "green", "day"),
        (14, "blue", "dusk"),
        (15, "green", "dusk"),
    ],
)
def test_reader_reads_rendered_plates_exactly(
    reader: PlateReader, seed: int, colour: PlateColour, light: str
) -> None:
    from detectors.plates_render import EVAL_SEEDS, plate_sample

    assert seed not in EVAL_SEEDS
    s = plate_sample(seed, colour=colour, width_px=150, light=light)
    got = reader.read(s.crop)
    assert got is not None, s.text
    assert (got.text, got.colour) == (s.text, colour)
    assert got.confidence >= PlatesConfig().min_confidence
    assert got.crop.shape[0] == 48 and got.crop.shape[1] > 2.5 * 48


# -- the gateway's side -----------------------------------------------------------------------------


def _message(measurements: dict[str, float | int | str | bool]) -> EdgeEventMessage:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    return EdgeEventMessage(
        edge_id="edge-1",
        camera_id="cam-1",
        seq=1,
        phase=EdgePhase.new,
        event_id="E1",
        kind="illegal_parking",
        zone="kerb",
        location=Location(lat=31.23, lon=121.47),
        confidence=0.9,
        started_at=at,
        at=at,
        measurements={"dwell_s": 200.0, **measurements},
        evidence=[EvidenceRef(name="plate.jpg", taken_at=at, bytes=1234)],
    )


def test_gateway_event_and_ticket_evidence_carry_the_plate() -> None:
    ev = to_event(_message({"plate": "京A12345", "plate_confidence": 0.97, "plate_colour": "blue"}))
    assert ev.evidence["plate"] == {
        "text": "京A12345",
        "confidence": 0.97,
        "colour": "blue",
        "crop": {
            "name": "plate.jpg",
            "taken_at": "2026-12-01T09:00:00+00:00",
            "bytes": 1234,
            "url": "/api/v1/evidence/edge-1/E1/plate.jpg",
        },
    }
    assert ev.message.endswith(", plate 京A12345")


@given(st.text(max_size=40), st.one_of(st.floats(allow_nan=True), st.text(max_size=5)), st.text(max_size=8))
def test_gateway_puts_only_a_well_formed_plate_on_the_event(
    plate: str, conf: float | str, colour: str
) -> None:
    ev = to_event(_message({"plate": plate, "plate_confidence": conf, "plate_colour": colour}))
    doc = ev.evidence.get("plate")
    if not is_plate(plate):
        assert doc is None and "plate" not in ev.message
        return
    assert doc is not None and doc["text"] == plate
    assert doc["confidence"] is None or 0 <= doc["confidence"] <= 1
    assert doc["colour"] in (None, "blue", "yellow", "green")

from pathlib import Path

import pytest

from gridgate.config import ConfigError, load_gateway_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_gateway_config_is_valid() -> None:
    cfg = load_gateway_config(REPO / "config" / "gateway.yaml")
    assert cfg.broker.topic_prefix == "gridgate"
    assert cfg.devices_file.exists()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "gw.yaml"
    f.write_text("broker: {host: a.example, port: 1884}\ninflux: {api: v2, token: from-file}\n")
    monkeypatch.setenv("GRIDGATE_BROKER__HOST", "b.example")
    monkeypatch.setenv("GRIDGATE_INFLUX__TOKEN", "from-env")
    cfg = load_gateway_config(f)
    assert cfg.broker.host == "b.example" and cfg.broker.port == 1884
    assert cfg.influx.token_secret() == "from-env"
    assert "from-env" not in repr(cfg)  # secrets never printed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker: {prot: 1883}\n", "broker.prot"),
        ("broker: {port: 99999}\n", "broker.port"),
        ("influx: {api: v3}\n", "influx.api"),
        ("vendor_topics: [{pattern: 'a/b/c', codec: json}]\n", "vendor_topics[0]"),
        ("broker: [\n", "line 2"),
    ],
)
def test_errors_name_file_field_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "gw.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(f)
    rendered = exc.value.render()
    assert str(f) in rendered and expected in rendered


def test_vendor_topic_pattern_maps_device_id() -> None:
    from gridgate.config import VendorTopic

    vt = VendorTopic(pattern="acme/+/{device_id}/data", codec="manhole_binary")
    assert vt.subscription == "acme/+/+/data"
    m = vt.compile().match("acme/x/MH-7/data")
    assert m and m.group("device_id") == "MH-7"
    assert vt.compile().match("acme/x/MH-7/other") is None

from pathlib import Path

from typer.testing import CliRunner

from gridgate.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_config_check_validates_routing_yaml(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["config", "check", "-c", str(REPO / "config" / "routing.yaml")])
    assert ok.exit_code == 0 and "categories" in ok.output, ok.output
    bad = tmp_path / "routing.yaml"
    bad.write_text(
        "teams: {drainage: {}}\nfallback_team: drainage\nfault_team: drainage\n"
        "categories:\n  ponding: {team: nobody}\n"
    )
    result = runner.invoke(app, ["config", "check", "-c", str(bad)])
    assert result.exit_code == 2 and "categories.ponding.team" in result.output


def test_config_check_of_gateway_yaml_checks_its_routing_and_open311(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text("categories:\n  ponding: {sla: {accept_s: -1}}\n")
    gw = tmp_path / "gateway.yaml"
    gw.write_text(f"tickets: {{routing_file: {routing}}}\n")
    result = runner.invoke(app, ["config", "check", "-c", str(gw)])
    assert result.exit_code == 2 and "categories.ponding.sla.accept_s" in result.output
    gw.write_text(
        f"tickets: {{routing_file: {REPO / 'config' / 'routing.yaml'}}}\nopen311: {{services: [nope]}}\n"
    )
    result = runner.invoke(app, ["config", "check", "-c", str(gw)])
    assert result.exit_code == 2 and "open311.services" in result.output

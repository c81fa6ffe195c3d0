"""`gridgate mqtt acl`: Mosquitto password and ACL files from gateway.yaml and its devices.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gridgate.config import ConfigError, load_gateway_config, read_yaml, resolve_path

mqtt_app = typer.Typer(help="The MQTT broker: credentials and access rules.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)

DEFAULT_CAMERAS = Path("config/cameras.yaml")


@mqtt_app.command("acl")
def acl(
    config: Annotated[Path, typer.Option("-c", "--config", help="gateway.yaml")] = Path(
        "config/gateway.yaml"
    ),
    out: Annotated[
        Path, typer.Option("-o", "--out", help="folder for passwd, acl, credentials.csv, *.password")
    ] = Path("var/mqtt"),
    edge: Annotated[
        list[str] | None, typer.Option("--edge", help="an edge box id (repeat for each); adds to --cameras")
    ] = None,
    cameras: Annotated[
        list[Path] | None,
        typer.Option(
            "--cameras",
            help="cameras.yaml of an edge box (repeat for each); default config/cameras.yaml beside "
            "gateway.yaml when there is one and no --edge is given",
        ),
    ] = None,
    reader: Annotated[
        list[str] | None,
        typer.Option(
            "--reader", help="a user that reads alerts, tickets, faults and dead letters (command centre)"
        ),
    ] = None,
    gateway_user: Annotated[
        str | None, typer.Option(help="the gateway's MQTT user; default broker.username, else `gateway`")
    ] = None,
    rotate: Annotated[
        bool, typer.Option(help="new passwords for everyone (default: keep earlier ones)")
    ] = False,
) -> None:
    """Write Mosquitto's password_file and acl_file: each device may publish only its own topics,
    the gateway reads all uplinks, each edge box publishes under its own edge topics."""
    from devices.registry import load_registry
    from gateway.broker_acl import plan_users, write_files

    try:
        cfg = load_gateway_config(config)
        registry = load_registry(cfg.devices_file)
        edge_ids = list(edge or [])
        files = list(cameras or [])
        if not files and not edge_ids:
            default = resolve_path(DEFAULT_CAMERAS, config)
            files = [default] if default.is_file() else []
        for file in files:
            data = read_yaml(file) or {}
            edge_ids.append(str(data.get("edge_id", "edge-1")) if isinstance(data, dict) else "edge-1")
        user = gateway_user or cfg.broker.username or "gateway"
        users = plan_users(cfg, registry, dict.fromkeys(edge_ids), user, dict.fromkeys(reader or []))
        written = write_files(users, out, rotate=rotate)
    except ConfigError as err:
        console.print(f"[red]{err.render()}[/red]", highlight=False)
        raise typer.Exit(2) from err
    devices = sum(u.role == "device" for u in users)
    console.print(
        f"[green]wrote[/green] {written.passwd} and {written.acl}: gateway user {user!r}, "
        f"{len(edge_ids)} edge boxes ({', '.join(edge_ids) or 'none: pass --edge or --cameras'}), "
        f"{len(reader or [])} readers, {devices} devices; {written.new_passwords} new passwords",
        highlight=False,
    )
    console.print(f"passwords (mode 0600, folder 0700): {written.credentials}", highlight=False)
    for name, path in written.password_files.items():
        console.print(f"  {name}: {path}  (its broker.password_file)", highlight=False)
    if not cfg.broker.username:
        console.print(
            f"[yellow]note: {config} sets no broker.username: give the gateway `username: {user}` and "
            f"`password_file: {written.password_files[user]}` (or GRIDGATE_BROKER__USERNAME / "
            "GRIDGATE_BROKER__PASSWORD_FILE)[/yellow]",
            highlight=False,
        )

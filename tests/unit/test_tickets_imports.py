"""The ticket desk depends on an interface the gateway provides (TicketHost), never on the Gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway.tickets

TICKETS_DIR = Path(gateway.tickets.__file__).parent
FORBIDDEN = "gateway.service"


def imported(path: Path, package: list[str]) -> list[tuple[int, str]]:
    """Every module (and module.name) a file imports, under TYPE_CHECKING too; relative ones resolved
    against `package`, the file's package."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.append((node.lineno, module))
            out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return out


def forbidden(names: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(line, n) for line, n in names if n == FORBIDDEN or n.startswith(FORBIDDEN + ".")]


def test_no_module_under_gateway_tickets_imports_gateway_service() -> None:
    files = sorted(TICKETS_DIR.rglob("*.py"))
    assert len(files) > 10  # the scan sees the package
    offenders = [
        f"gateway/tickets/{path.relative_to(TICKETS_DIR)}:{line}: imports {name}"
        for path in files
        for line, name in forbidden(
            imported(path, ["gateway", "tickets", *path.relative_to(TICKETS_DIR).parent.parts])
        )
    ]
    assert offenders == [], "gateway/tickets must depend on TicketHost, not the Gateway:\n" + "\n".join(
        offenders
    )


@pytest.mark.parametrize(
    "code",
    [
        "import gateway.service",
        "from gateway.service import Gateway",
        "from gateway import service",
        "from .. import service",
        "from ..service import Gateway",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.service import Gateway",
    ],
)
def test_the_scan_sees_every_form_of_the_import(tmp_path: Path, code: str) -> None:
    path = tmp_path / "x.py"
    path.write_text(code + "\n")
    assert forbidden(imported(path, ["gateway", "tickets"]))

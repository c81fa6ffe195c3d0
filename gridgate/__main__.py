"""`python -m gridgate`: the same CLI as the `gridgate` command."""

from gridgate.cli import app

app(prog_name="gridgate")

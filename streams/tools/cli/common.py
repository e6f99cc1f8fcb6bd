"""What every command module shares: the consoles, the settings and the progress bar."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from streams.settings import Settings, settings_for_cli
from streams.tools.progress import LineProgress, progress_for

console = Console()
err = Console(stderr=True)


def settings() -> Settings:
    """The settings from SHINSA_* variables; a bad one is a UserError saying which and why."""
    return settings_for_cli()


def progress() -> Progress | LineProgress:
    return progress_for(err)

"""What every test shares: `run_cli`, the one way a test runs the `shinsa` command (as a user
does: a process, its exit code and its two streams), and the environment that points a
process at a test's topics and Redis namespace."""

from __future__ import annotations

import os
import subprocess
import sys

from streams.settings import Settings
from streams.tools.demo import worker_env

# Settings a test may change for its worker (the rest are the local stack's defaults).
PASSED_SETTINGS = (
    "model_min_labels",
    "model_min_positives",
    "model_checkpoint_labels",
    "model_checkpoint_seconds",
    "label_grace_seconds",
    "learner",
    "learner_lease_seconds",
    "model_challenger",
)


def env_vars(settings: Settings) -> dict[str, str]:
    passed = {f"SHINSA_{name.upper()}": str(getattr(settings, name)) for name in PASSED_SETTINGS}
    return worker_env(settings) | passed


def run_cli(
    settings: Settings | None,
    *args: str,
    stdin: str | None = None,
    columns: int = 250,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """`shinsa ARGS…` as a user runs it, against the test's topics and Redis namespace (or the
    environment's own settings with None); wide, so tables are not wrapped."""
    env = {**os.environ, "COLUMNS": str(columns)}
    if settings is not None:
        env |= env_vars(settings)
    return subprocess.run(
        [sys.executable, "-m", "streams.tools.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

"""An installable package: a wheel built from the repository, installed into a fresh
virtualenv, runs `shinsa --help`, decodes an event with the schemas it ships, and brings the
local stack up (already running here: `stack up` finds it) — from outside the checkout.

The fresh virtualenv gets the wheel alone (`--no-deps`); its dependencies come from the
project's own virtualenv through a plain path line (not that environment's editable install,
whose .pth hook is not run for a path added this way), so nothing of the checkout is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from streams.settings import ROOT

pytestmark = pytest.mark.integration


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_wheel_installs_and_runs_outside_the_checkout(local_stack, tmp_path: Path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT, cwd=tmp_path)
    wheel = next(dist.glob("shinsa-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "streams/schemas/Order.avsc" in names and "agents/segments.lua" in names
    assert "streams/monitoring/prometheus/rules/alerts.yml" in names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(venv / "bin" / "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    where = json.loads(
        run(
            python,
            "-c",
            "import json, streams, agents; from streams.settings import load_settings; "
            "s = load_settings(); print(json.dumps([streams.__file__, agents.__file__, "
            "str(s.schema_dir), str(s.data_dir)]))",
            cwd=work,
            env=env,
        )
    )
    assert all(str(site) in path for path in where[:3]), where  # the wheel, not the checkout
    assert where[3] == str(work / ".shinsa")

    shinsa = [venv / "bin" / "shinsa"]  # the console script the wheel installed
    assert "stack" in run(*shinsa, "--help", cwd=work, env=env)
    decoded = run(
        python,
        "-c",
        "from streams.codec import SchemaRegistry; from streams.settings import load_settings; "
        "r = SchemaRegistry(load_settings().schema_dir); "
        "d = r.from_json('Login', {'login_id': 'l1', 'account_id': 'a1', "
        "'event_time': 1790000000000, 'method': 'OTP', 'success': True}); "
        "print(r.decode('Login', r.encode('Login', d))['account_id'])",
        cwd=work,
        env=env,
    )
    assert decoded.strip() == "a1"
    up = run(*shinsa, "stack", "up", cwd=work, env=env | {"SHINSA_DATA_DIR": str(ROOT / ".shinsa")})
    assert "kafka" in up and "redis" in up

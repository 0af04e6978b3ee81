"""The README's mode: `petflow run` with no Prefect server configured (ephemeral API server, local SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_run_in_ephemeral_mode_starts_one_server_and_reruns_cached(tmp_path, make_config):
    config = make_config(tmp_path, "tiny-ephemeral")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    manifests = []
    for attempt in ("first", "rerun"):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=400, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{attempt} run failed:\n{output[-3000:]}"
        # the CLI starts the server early (overlapping the config checks); the flow must reuse it
        assert output.count("Starting temporary server") == 1, output[-3000:]
        # the CLI validated before Prefect started: the flow does not run the same checks again
        assert "Task run 'validate" not in output, output[-3000:]
        assert "final classifier" in proc.stdout and "on test" in proc.stdout and "on T" in proc.stdout
        run_line = next(line for line in proc.stdout.splitlines() if line.startswith("run directory: "))
        assert Path(run_line.removeprefix("run directory: ")).is_dir()  # printed in full, never cut
        run_dir = max((tmp_path / "runs").glob("tiny-ephemeral-*"), key=lambda p: p.stat().st_mtime)
        manifests.append(json.loads((run_dir / "manifest.json").read_text()))
    assert (tmp_path / "prefect-home" / "prefect.db").is_file()  # runs are browsable later with `petflow server`
    assert not any(s["cached"] for s in manifests[0]["stages"] if s["name"].startswith("train"))
    assert all(s["cached"] for s in manifests[1]["stages"])

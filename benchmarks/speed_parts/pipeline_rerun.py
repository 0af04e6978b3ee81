"""Section 4: wall time of a small pipeline.run and of its cached reruns, in-process, fresh and via Prefect."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.speed_parts.common import ROOT, Record, log, record, timed

if TYPE_CHECKING:
    from pet_core.run_config import RunConfig


def small_run_config(args: argparse.Namespace, store: Path, runs: Path) -> RunConfig:
    from pet_core.config import DistillConfig, ModelConfig, TrainConfig
    from pet_core.data import DataSource
    from pet_core.run_config import DataConfig, RunConfig

    return RunConfig(
        name="speed-bench",
        task=str(Path(args.task).resolve()),
        data=DataConfig(pool=DataSource(path=str(Path(args.data).resolve())),
                        test=DataSource(path=str(Path(args.test_data).resolve())),
                        n_labeled=10, n_unlabeled=200, n_test=200, seed=1),
        model=ModelConfig(backbone=str(Path(args.backbone).resolve())),
        patterns=[0, 1], seeds=[1],
        train=TrainConfig(max_steps=10, grad_accumulation=1, unlabeled_ratio=1), distill=DistillConfig(max_steps=10),
        store=str(store), runs_dir=str(runs),
    )


def bench_pipeline(args: argparse.Namespace, work: Path) -> list[Record]:
    from pet_core.pipeline import run

    config = small_run_config(args, work / "store-plain", work / "runs")
    first_s, _ = timed(run, config)
    log(f"pipeline first run {first_s:.1f}s")
    second_s, second = timed(run, config)
    log(f"pipeline rerun {second_s:.1f}s")
    cached = sum(r.cached for r in second.records)
    setting = ("AG's News, |T|=10, |D|=200, test 200, 2 patterns × 1 seed, train.max_steps 10 (grad_accumulation 1, "
               "unlabeled_ratio 1), distill.max_steps 10, empty store")
    records = [
        record("pipeline.run, first run", first_s, "s", setting),
        record("pipeline.run, cached rerun", second_s, "s",
               f"same process, same store: {cached}/{len(second.records)} listed stages from the store "
               "(outputs re-hashed)", "<= 10"),
        record("pipeline.run, rerun / first", second_s / first_s, "x", ""),
    ]
    # the same rerun from a fresh interpreter: what `petflow run` pays without Prefect (imports included)
    import yaml

    path = work / "speed-bench-plain.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    snippet = ("import sys, time; t = time.perf_counter(); sys.path.insert(0, sys.argv[2]); "
               "from pet_core.run_config import RunConfig; from pet_core.pipeline import run; "
               "r = run(RunConfig.from_yaml(sys.argv[1])); "
               "print(sum(x.cached for x in r.records), len(r.records), 'torch' in sys.modules, "
               "round(time.perf_counter() - t, 2))")
    fresh_s, proc = timed(subprocess.run, [sys.executable, "-c", snippet, str(path), str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        cached_n, total_n, torch_loaded, inner = proc.stdout.strip().splitlines()[-1].split()
        records.append(record("pipeline.run, cached rerun in a fresh interpreter", fresh_s, "s",
                              f"{cached_n}/{total_n} stages cached; torch imported: {torch_loaded}; "
                              f"{inner} s after interpreter start", "<= 10"))
    else:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        records.append(record("pipeline.run, cached rerun in a fresh interpreter", None, "s", f"failed: {tail}"))
    return records + bench_prefect(args, work, config)


def bench_prefect(args: argparse.Namespace, work: Path, plain_config: RunConfig) -> list[Record]:
    import yaml

    if args.no_prefect:
        return []
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)  # ephemeral mode
    import_s, probe = timed(subprocess.run, [sys.executable, "-c", "import flows.cli, flows.pipeline"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    if not (ROOT / "flows/pipeline.py").exists() or probe.returncode != 0:
        why = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "flows/pipeline.py missing"
        return [record("Prefect flow, cached rerun", None, "s", f"skipped: flows.pipeline does not import ({why})")]
    store = Path(plain_config.store) if args.prefect_store == "shared" else work / "store-prefect"
    config = small_run_config(args, store, work / "runs-prefect")
    path = work / "speed-bench.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    times: list[float] = []
    inside: list[str] = []
    for attempt in ("first", "rerun"):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path)], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        log(f"prefect {attempt} {times[-1]:.1f}s (exit {proc.returncode})")
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            return [record(f"Prefect flow, {attempt} run", None, "s", f"failed (exit {proc.returncode}): {tail}")]
        manifests = sorted((work / "runs-prefect").glob("*/manifest.json"), key=lambda m: m.stat().st_mtime)
        if manifests:
            manifest = json.loads(manifests[-1].read_text(encoding="utf-8"))
            stages = manifest.get("stages", [])
            inside.append(f"{attempt}: {sum(bool(x.get('cached')) for x in stages)}/{len(stages)} stages cached, "
                          f"{manifest.get('wall_s')} s inside the flow")
    detail = ("`python -m flows.cli run CONFIG` in a fresh process, Prefect ephemeral mode, new PREFECT_HOME, "
              + ("the store pipeline.run filled (every stage already done)" if args.prefect_store == "shared"
                 else "empty store") + "; includes interpreter start, imports and the ephemeral server")
    first = "first run on the shared store" if args.prefect_store == "shared" else "first run"
    return [
        record(f"Prefect flow, {first}", times[0], "s", detail + ("; " + inside[0] if inside else "")),
        record("Prefect flow, cached rerun", times[1], "s", inside[1] if len(inside) > 1 else "", "<= 10"),
        record("Prefect: interpreter start + import flows.cli, flows.pipeline", import_s, "s",
               "part of every CLI run, cached or not (torch is not imported yet)"),
        record("Prefect flow, rerun / first", times[1] / times[0], "x", ""),
    ]

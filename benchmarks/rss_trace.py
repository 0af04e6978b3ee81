"""RSS trace of a pipeline run: peak resident memory per stage, sampled in a background thread.

Runs ``pet_core.pipeline.run`` on a short AG's News config (default: 2 patterns × 30 steps, |D| = 500,
test 200, max_seq_length 256, batch 4 labelled + 4 unlabelled with the auxiliary MLM loss) in a fresh
store, labelling each stage (``prepare``, ``train g0-p0-s1``, ``score …``, ``merge``, ``distill``,
``evaluate``) by wrapping the ``pet_core.stages`` functions, and prints per stage the RSS at its start,
its peak, the RSS at its end and its wall time. VmRSS is read from /proc/self/status every
``--interval`` seconds; the process-wide high-water mark (VmHWM) is printed at the end.

    OMP_NUM_THREADS=1 python benchmarks/rss_trace.py                       # the short config
    OMP_NUM_THREADS=1 python benchmarks/rss_trace.py --patterns 4 --steps 100 --n-unlabeled 2000 --n-test 1000
    OMP_NUM_THREADS=1 MALLOC_ARENA_MAX=2 python benchmarks/rss_trace.py --trim    # hypotheses: env / trim

``--trim`` calls ``malloc_trim(0)`` after every stage (glibc only); ``--release`` calls
``pet_core.memory.release_memory()`` instead (when that module exists); ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM, ...), 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples VmRSS in a daemon thread; ``label`` names the stage the samples are charged to."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.label = "imports"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> int:
        rss = status_kb("VmRSS")
        with self._lock:
            self.peaks[self.label] = max(self.peaks.get(self.label, 0), rss)
        return rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def enter(self, label: str) -> int:
        with self._lock:
            self.label = label
        return self.sample()


def malloc_trim() -> bool:
    """glibc's malloc_trim(0); False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


class StopRun(Exception):
    """Raised after the ``--until`` stage."""


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def mallinfo() -> dict[str, float] | None:
    """glibc heap statistics in MB: in use (arenas), free but held (arenas), mmapped; None without glibc."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    info = fn()
    return {"heap_used_mb": info.uordblks / 2**20, "heap_free_mb": info.fordblks / 2**20,
            "mmapped_mb": info.hblkhd / 2**20}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=str(SHARED / "models/minilm-l6-mlm"))
    parser.add_argument("--patterns", type=int, default=2, help="Use patterns 0..N-1 (one seed each).")
    parser.add_argument("--steps", type=int, default=30, help="Training steps per pattern model.")
    parser.add_argument("--n-labeled", type=int, default=10)
    parser.add_argument("--n-unlabeled", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--distill-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.02, help="Sampling period (s).")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after every stage.")
    parser.add_argument("--release", action="store_true", help="pet_core.memory.release_memory() after every stage.")
    parser.add_argument("--store", default=None, help="Artifact store (default: a fresh temp dir).")
    parser.add_argument("--json", default=None, help="Write the rows as JSON here.")
    parser.add_argument("--redo", nargs="*", default=[], help="With --store: delete these stages' entries "
                        "(e.g. distill evaluate) so only they run again; the rest comes from the store.")
    parser.add_argument("--until", default=None, help="Stop after the first stage whose label starts with this.")
    parser.add_argument("--verbose", action="store_true", help="Print each stage's row as it finishes.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sampler = RssSampler(args.interval).start()

    import torch
    import transformers

    from pet_core import stages
    from pet_core.config import DistillConfig, ModelConfig, TrainConfig
    from pet_core.data import DataSource
    from pet_core.pipeline import run
    from pet_core.run_config import DataConfig, RunConfig

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    rows: list[dict] = []
    seen: dict[str, int] = {}
    after = None
    if args.release:
        from pet_core.memory import release_memory

        after = release_memory
    elif args.trim:
        after = malloc_trim

    def traced(name: str, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            label = name
            if name == "train":
                label = f"train p{a[4]}"
            elif name == "score":
                label = f"score {Path(a[4].path).parent.parent.name[:6]}→{Path(a[5].path).stem}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            start = sampler.enter(label)
            started = time.perf_counter()
            result = fn(*a, **kw)
            end_raw = sampler.sample()
            heap = mallinfo() or {}
            if after is not None:
                after()
            end = sampler.sample()
            rows.append({"stage": label, "start_mb": start / 1024, "peak_mb": sampler.peaks[label] / 1024,
                         "end_mb": end_raw / 1024, "after_release_mb": end / 1024,
                         "wall_s": time.perf_counter() - started, "cached": getattr(result, "cached", None), **heap})
            sampler.enter("between stages")
            if args.verbose:
                print(f"[{label}] start {start / 1024:.0f} peak {sampler.peaks[label] / 1024:.0f} end {end_raw / 1024:.0f} "
                      f"after {end / 1024:.0f} MB, {rows[-1]['wall_s']:.1f} s; glibc at end: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in heap.items()), flush=True)
            if args.until and label.startswith(args.until):
                raise StopRun
            return result
        return wrapper

    for name in ("prepare", "adapt", "train", "score", "merge", "next_generation", "distill", "evaluate"):
        setattr(stages, name, traced(name, getattr(stages, name)))

    store = args.store or tempfile.mkdtemp(prefix="petflow-rss-")
    for stage in args.redo:
        if (Path(store) / stage).is_dir():
            shutil.rmtree(Path(store) / stage)
    config = RunConfig(
        name="rss-trace",
        task=str(ROOT / "data/tasks/ag_news.yaml"),
        data=DataConfig(pool=DataSource(path=str(SHARED / "data/ag_news/train.csv")),
                        test=DataSource(path=str(SHARED / "data/ag_news/test.csv")),
                        n_labeled=args.n_labeled, n_unlabeled=args.n_unlabeled, n_test=args.n_test, seed=args.seed),
        model=ModelConfig(backbone=args.backbone, max_seq_length=args.max_seq_length),
        patterns=list(range(args.patterns)),
        seeds=[args.seed],
        train=TrainConfig(max_steps=args.steps, grad_accumulation=1, unlabeled_ratio=1),
        distill=DistillConfig(max_steps=args.distill_steps, min_steps=min(30, args.distill_steps)),
        store=store,
    )
    imports_mb = sampler.enter("pipeline") / 1024
    started = time.perf_counter()
    try:
        run(config)
    except StopRun:
        pass
    wall = time.perf_counter() - started
    sampler.stop()
    hwm = status_kb("VmHWM") / 1024
    env = {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("MALLOC_", "ONEDNN", "DNNL", "LD_PRELOAD",
                                                                          "PYTORCH", "OMP_", "MKL"))}
    print(f"config: {args.patterns} patterns x {args.steps} steps, |D|={args.n_unlabeled}, test={args.n_test}, "
          f"max_seq_length={args.max_seq_length}, distill {args.distill_steps} steps, threads={args.threads}, "
          f"after-stage={'release_memory' if args.release else 'malloc_trim' if args.trim else 'none'}, env={env}")
    print(f"RSS after imports: {imports_mb:.0f} MB")
    print("| stage | RSS start (MB) | peak (MB) | end (MB) | after release (MB) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['start_mb']:.0f} | {row['peak_mb']:.0f} | {row['end_mb']:.0f} | "
              f"{row['after_release_mb']:.0f} | {row['wall_s']:.1f} |")
    print(f"peak RSS (VmHWM): {hwm:.0f} MB; wall {wall:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "env": env, "imports_mb": imports_mb,
                                               "rows": rows, "hwm_mb": hwm, "wall_s": wall}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Are two runs byte-identical? Compare every stage record of two artifact stores.

    python benchmarks/compare_stores.py STORE_A STORE_B [--out benchmarks/results/reproducibility.json]

Pairs each ``<stage>/<key>/record.json`` of A with the same entry of B (same key = same config, inputs and
code) and compares the sha256 of every output the records list (directories hash their whole tree), as
the records state them and as the files on disk hash now. Prints one row per entry and writes JSON.
Exit 1 when any output differs or an entry exists in one store only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pet_core.artifacts import sha256_path  # noqa: E402
from pet_core.store import RECORD  # noqa: E402


def entries(store: Path) -> dict[str, dict]:
    """``stage/key`` -> the parsed record of every committed entry."""
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text()) for p in store.glob(f"*/*/{RECORD}")}


def compare(a: Path, b: Path) -> list[dict]:
    """One row per entry of either store: stage, key, outputs and whether each is identical."""
    left, right = entries(a), entries(b)
    rows = []
    for entry in sorted(left.keys() | right.keys()):
        if entry not in left or entry not in right:
            rows.append({"entry": entry, "identical": False, "why": f"only in {'A' if entry in left else 'B'}"})
            continue
        outputs = {}
        for name, ref in left[entry]["outputs"].items():
            ours, theirs = ref["sha256"], right[entry]["outputs"].get(name, {}).get("sha256")
            on_disk = sha256_path(a / entry / ref["path"]), sha256_path(b / entry / ref["path"])
            outputs[name] = {"sha256": ours, "identical": ours == theirs and on_disk == (ours, theirs)}
        rows.append({"entry": entry, "outputs": outputs, "identical": all(o["identical"] for o in outputs.values())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store_a", type=Path)
    parser.add_argument("store_b", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/reproducibility.json")
    args = parser.parse_args()
    rows = compare(args.store_a.resolve(), args.store_b.resolve())
    print("| stage/key | output | sha256 | identical |\n|---|---|---|---|")
    for row in rows:
        for name, output in row.get("outputs", {}).items():
            print(f"| {row['entry'][:24]} | {name} | {output['sha256'][:16]} | {output['identical']} |")
        if "why" in row:
            print(f"| {row['entry'][:24]} | – | – | {row['why']} |")
    same = sum(r["identical"] for r in rows)
    print(f"\n{same} of {len(rows)} entries identical")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"store_a": str(args.store_a), "store_b": str(args.store_b), "entries": rows},
                                   indent=1) + "\n")
    sys.exit(0 if same == len(rows) else 1)


if __name__ == "__main__":
    main()

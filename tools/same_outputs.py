"""Show that two revisions give byte-identical outputs on the bundled sample: the records, and the
detections and metrics of one fixed export.

    python tools/same_outputs.py --before 3a1dbef --export EXPORT_DIR [--after WORKTREE]

`--before` is a git revision, checked out into a temporary worktree; `--after` is a checkout (default:
this one). Each runs generate_tfrecords on workspace/sample/nih, then detect (both backends) with the
same EXPORT_DIR on the sample's test split and negatives, then evaluate; every output file is compared
byte for byte, except the run-specific ones named in VOLATILE (timings and absolute paths). Exit
status 0 when all are identical, 1 otherwise, each difference named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VOLATILE = {"summary.json", "run.json", ".journal.jsonl", "export.json"}  # times, paths, versions
def run(tree: Path, module: str, *argv: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "CHESTDET_WORKSPACE": str(tree / "workspace")}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=tree, env=env, capture_output=True,
                            text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(f"{tree}: {module} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def outputs_of(tree: Path, export: Path, out: Path) -> None:
    sample = REPO / "workspace" / "sample" / "nih"
    run(tree, "chestdet.commands.generate_tfrecords", "--nih-csv", str(sample / "BBox_List_2017.csv"),
        "--data-entry", str(sample / "Data_Entry_2017_sample.csv"), "--image-dir", str(sample / "images"),
        "--unlabeled-dir", str(sample / "unlabeled"), "--output-dir", str(out / "records"), "--seed", "0")
    for backend in ("tflite", "savedmodel"):
        detections = out / f"detections-{backend}"
        run(tree, "chestdet.commands.detect", "--model", str(export), "--backend", backend, "--split-file",
            str(out / "records" / "split.csv"), "--split", "test", "--image-dir", str(sample / "images"),
            "--image-dir", str(sample / "unlabeled"), "--output-dir", str(detections), "--min-score", "0.05")
        run(tree, "chestdet.commands.evaluate", "--detections", str(detections / "detections.csv"),
            "--ground-truth", str(sample / "BBox_List_2017.csv"), "--split-file", str(out / "records" / "split.csv"),
            "--split", "test", "--output-dir", str(out / f"evaluation-{backend}"), "--no-plots")


def digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name not in VOLATILE}


def compare(before: Path, after: Path) -> list[str]:
    a, b = digests(before), digests(after)
    differences = [f"only before: {name}" for name in sorted(a.keys() - b.keys())]
    differences += [f"only after: {name}" for name in sorted(b.keys() - a.keys())]
    differences += [f"differs: {name}" for name in sorted(a.keys() & b.keys()) if a[name] != b[name]]
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", type=Path, default=REPO, help="checkout to compare (default: this one)")
    parser.add_argument("--export", type=Path, required=True, help="the fixed export both detect with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="same-outputs ") as scratch:
        scratch = Path(scratch)
        before_tree = scratch / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before_tree), args.before],
                       check=True, capture_output=True)
        try:
            for name, tree in (("before", before_tree), ("after", args.after.resolve())):
                # written under one path and then moved: reports name their inputs by absolute path
                outputs_of(tree, args.export.resolve(), scratch / "out")
                (scratch / "out").rename(scratch / f"out-{name}")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before_tree)], check=False)
        differences = compare(scratch / "out-before", scratch / "out-after")
        files = len(digests(scratch / "out-after"))
    print(json.dumps({"files compared": files, "differences": differences}, indent=1))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())

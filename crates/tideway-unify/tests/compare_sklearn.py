#!/usr/bin/env python3
"""Compare Tideway's churn model with scikit-learn's HistGradientBoostingClassifier.

Both train on the same rows of the same synthetic churn table (written by the Rust test
`predict::tests::export_for_sklearn`, with its train/test split in the `split` column) and are
measured by test AUC. Tideway passes when its AUC is within --tolerance (0.02) of sklearn's.

    python3 -m venv venv && venv/bin/pip install scikit-learn numpy pandas
    venv/bin/python crates/tideway-unify/tests/compare_sklearn.py --rows 100000

With --csv FILE and --tideway-auc X it only reads an existing export instead of running cargo.
Exit status: 0 within tolerance, 1 outside it.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score


def export(rows: int, package: str, path: str) -> float:
    """Runs the Rust export test (release build); returns Tideway's test AUC."""
    env = dict(os.environ, PREDICT_CSV=path, PREDICT_ROWS=str(rows))
    cmd = ["cargo", "test", "--release", "-p", package, "--lib", "--",
           "--ignored", "--exact", "predict::tests::export_for_sklearn", "--nocapture"]
    print("$", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    print(out, end="")
    match = re.search(r"tideway_test_auc=([0-9.]+)", out)
    if not match:
        sys.exit("the export test did not print tideway_test_auc=...")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--package", default="tideway-unify")
    parser.add_argument("--csv", help="an existing export (skips cargo)")
    parser.add_argument("--tideway-auc", type=float, help="Tideway's AUC for --csv")
    parser.add_argument("--tolerance", type=float, default=0.02)
    args = parser.parse_args()

    if args.csv:
        path, ours = args.csv, args.tideway_auc
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="tideway-churn-"), "churn.csv")
        ours = export(args.rows, args.package, path)

    df = pd.read_csv(path)
    features = [c for c in df.columns if c not in ("id", "label", "split")]
    train, test = df[df.split == "train"], df[df.split == "test"]
    clf = HistGradientBoostingClassifier(random_state=0)
    started = time.perf_counter()
    clf.fit(train[features].to_numpy(np.float64), train.label.to_numpy())
    seconds = time.perf_counter() - started
    theirs = roc_auc_score(test.label, clf.predict_proba(test[features].to_numpy(np.float64))[:, 1])

    print(f"rows: {len(train)} train, {len(test)} test, {len(features)} features")
    print(f"sklearn HistGradientBoostingClassifier(random_state=0): test AUC {theirs:.4f}, "
          f"{clf.n_iter_} iterations, fit {seconds:.2f} s")
    if ours is None:
        print("no Tideway AUC given (--tideway-auc); nothing to compare")
        return 0
    diff = ours - theirs
    ok = abs(diff) <= args.tolerance
    print(f"tideway: test AUC {ours:.4f} ({diff:+.4f}): "
          f"{'within' if ok else 'OUTSIDE'} {args.tolerance} of sklearn")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

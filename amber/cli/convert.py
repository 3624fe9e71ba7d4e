"""``amber convert OLD NEW``: turn a pickle or joblib file into a verified artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from amber.cli import add_unsafe_option


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert", help="load a pickle/joblib file safely and save it as a verified .amber artifact"
    )
    p.add_argument("source", help="a pickle or joblib file")
    p.add_argument("target", help="the .amber file to write")
    p.add_argument(
        "--sample", metavar="FILE",
        help="sample inputs for the probe: a .npy array or a .csv table (header row)",
    )  # fmt: skip
    p.add_argument(
        "--trust", action="append", default=[], metavar="NAME",
        help="admit an extra type found by `amber scan` (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--compress", default="none",
        choices=["none", "auto", "zlib", "lzma", "lz4", "zstd"],
    )  # fmt: skip
    add_unsafe_option(p, "the source file")
    p.set_defaults(run=run)


def _read_sample(path: str) -> Any:
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path)
    raise ValueError(f"--sample {path!r}: give a .npy or .csv file")


def run(args: argparse.Namespace) -> int:
    import amber

    unsafe = args.allow_arbitrary_code
    model = amber.load(args.source, trusted=args.trust, allow_arbitrary_code=unsafe)
    sample = _read_sample(args.sample) if args.sample else None
    info = amber.save(model, args.target, sample=sample, compress=args.compress)
    amber.verify(args.target, trusted=args.trust, allow_arbitrary_code=unsafe)
    print(f"converted {args.source} -> {args.target} (verified)")
    print(info)
    return 0

"""``amber keygen``: make an Ed25519 key pair for signing artifacts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair (PREFIX.key, PREFIX.pub)")
    p.add_argument(
        "--out", default="amber-signing", metavar="PREFIX",
        help="write PREFIX.key (private, mode 0600) and PREFIX.pub (default: amber-signing)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from amber.security._signing import generate_key, key_id, load_public_key

    private_path, public_path = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    for path in (private_path, public_path):
        if path.exists() and not args.force:
            raise FileExistsError(
                f"{str(path)!r} exists; choose another --out PREFIX, or pass --force to replace "
                f"it (a replaced private key cannot sign for the old public key)"
            )
    private, public = generate_key()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_path.write_bytes(public)
    print(f"private key: {private_path} (keep it secret; sign with --key {private_path})")
    print(f"public key:  {public_path} (hand it out; check with --pubkey {public_path})")
    print(f"key id:      {key_id(load_public_key(public))}")
    return 0

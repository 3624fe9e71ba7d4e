"""``amber keygen``: make an Ed25519 key pair for signing artifacts.

The pair is written together or not at all: both files go to temporary files beside their
targets first, and are renamed over them only once both are complete; the private key is always
mode 0600, whatever the file it replaces allowed. An error says whether the key files were
written (an output that cannot be written, after they were, says they were).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
from typing import Any

from amber.cli._output import echo, reporting


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

    prefix = args.out
    if not prefix or os.path.basename(prefix) in ("", os.curdir, os.pardir):
        raise ValueError(
            f"--out {prefix!r} names no file: give a prefix such as 'release' (it writes "
            f"release.key and release.pub), or 'keys/release' in a folder"
        )
    private_path, public_path = f"{prefix}.key", f"{prefix}.pub"
    folder = os.path.dirname(prefix) or os.curdir
    if not os.path.isdir(folder):
        if os.path.exists(folder):  # (a file: /dev/null/x)
            raise NotADirectoryError(
                f"cannot write {private_path!r}: {folder!r} is not a folder; choose another "
                f"--out PREFIX"
            )
        raise FileNotFoundError(
            f"cannot write {private_path!r}: the folder {folder!r} does not exist; create it "
            f"first (mkdir -p {folder}) or choose another --out PREFIX"
        )
    for path in (private_path, public_path):
        _check_target(path, args.force)
    private, public = generate_key()
    kid = key_id(load_public_key(public))
    _write_pair(args, (private_path, private), (public_path, public), folder)
    with reporting(f"wrote {private_path!r} and {public_path!r} (key id {kid})"):
        echo(f"private key: {private_path} (keep it secret; sign with --key {private_path})")
        echo(f"public key:  {public_path} (hand it out; check with --pubkey {public_path})")
        echo(f"key id:      {kid}")
    return 0


def _write_pair(
    args: argparse.Namespace, private: tuple[str, bytes], public: tuple[str, bytes], folder: str
) -> None:
    """Both key files or neither; an error says which files were written, if any."""
    from amber.artifact._atomic import fsync_dir
    from amber.cli import _os_message

    (private_path, private_key), (public_path, public_key) = private, public
    written: list[str] = []
    try:
        try:
            tmp_private = _write_temporary(private_path, private_key, 0o600)
            written.append(tmp_private)
            tmp_public = _write_temporary(public_path, public_key, 0o644)
            written.append(tmp_public)
            old_public = _read_old(public_path)
            # the public key first: should the second rename fail, the old private key is still
            # there and the old public key is put back
            os.replace(tmp_public, public_path)
        except OSError as exc:
            raise OSError(f"{_os_message(exc, args)} (no key file was written)") from exc
        try:
            os.replace(tmp_private, private_path)
        except BaseException as exc:
            put_back = _put_back(public_path, old_public)
            if not isinstance(exc, OSError):
                raise
            if put_back:
                raise OSError(f"{_os_message(exc, args)} (no key file was written)") from exc
            raise OSError(
                f"{_os_message(exc, args)}; {public_path!r} now holds the new public key but "
                f"{private_path!r} is still the old private key (or none), and the old public "
                f"key could not be put back: the pair does not match; run `amber keygen --out "
                f"{args.out} --force` again"
            ) from exc
        try:
            fsync_dir(folder)
        except OSError as exc:
            raise OSError(
                f"wrote {private_path!r} and {public_path!r}, but syncing their folder "
                f"{folder!r} failed ({_os_message(exc, args)}): a crash before the system "
                f"writes it could lose them; check the disk"
            ) from exc
    finally:
        for tmp in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _check_target(path: str, force: bool) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a folder; choose another --out PREFIX")
    if not os.path.lexists(path):
        return
    if not force:
        raise FileExistsError(
            f"{path!r} exists; choose another --out PREFIX, or pass --force to replace "
            f"it (a replaced private key cannot sign for the old public key)"
        )
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(
            f"cannot replace {path!r}: the file is read-only; make it writable first (chmod u+w) "
            f"or choose another --out PREFIX (nothing was written)"
        )


def _write_temporary(path: str, data: bytes, mode: int) -> str:
    """``data`` in a new file beside ``path``, synced; a private key (``mode`` 0600) gets
    exactly 0600, however permissive the file it will replace was."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except PermissionError:
        raise PermissionError(
            f"cannot write {path!r}: the folder {folder or os.curdir!r} is not writable; "
            f"choose another --out PREFIX"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode == 0o600:
                os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _read_old(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _put_back(path: str, old: bytes | None) -> bool:
    """Undo the rename of a new public key over ``path``; whether it could be undone."""
    try:
        if old is None:
            os.unlink(path)
        else:
            os.replace(_write_temporary(path, old, 0o644), path)
    except OSError:
        return False
    return True

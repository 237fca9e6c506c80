"""`veil keygen`, `veil recover` and `veil inspect`: the controller's side of authorised
recovery (veil.stream.recovery) and what a file says about itself."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import av

from veil.errors import InputError, reason
from veil.stream.io.provenance import TAGS
from veil.stream.recovery import access
from veil.stream.recovery.keys import generate, load_private
from veil.stream.recovery.restore import list_tracks, recover
from veil.stream.recovery.sidecar import sidecar_path

PASSPHRASE_ENV = "VEIL_KEY_PASSPHRASE"


def _passphrase(prompt: str, *, confirm: bool = False) -> bytes | None:
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV].encode()
    if not sys.stdin.isatty():
        raise InputError(f"no terminal to ask for the passphrase: set {PASSPHRASE_ENV}")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != first:
        raise InputError("the two passphrases differ")
    return first.encode() or None


def keygen(prefix: str, *, passphrase: bool, log=print) -> None:
    secret = _passphrase("passphrase for the private key: ", confirm=True) if passphrase else None
    public, private = generate(prefix, secret)
    log(f"veil: wrote {public} (give it to the machines that anonymise) and {private} (mode 0600{', encrypted' if secret else ''}: "
        "keep it with the controller; whoever holds it can restore faces)")  # fmt: skip


def _key(path: str):
    try:
        return load_private(path)
    except InputError as error:
        if "needs its passphrase" not in str(error):
            raise
    return load_private(path, _passphrase(f"passphrase for {path}: "))


def run_recover(args, log=print) -> None:
    if args.verify_log:
        path = access.log_path(Path(args.sidecar) if args.sidecar else sidecar_path(args.video))
        if not path.exists():
            raise InputError(f"no access log at {path}")
        log(f"veil: {path}: {access.verify(path)} records, chain intact")
        return
    if args.key is None:
        raise InputError("give the private key: --key controller.key")
    key = _key(args.key)
    if args.list:
        table = list_tracks(args.video, key, sheet=args.output, sidecar=args.sidecar, partial=args.partial)
        log("track  first s  last s  frames")
        for row in table:
            log(f"{row['track']:>5}  {row['first_s']:>7.2f}  {row['last_s']:>6.2f}  {row['frames']:>6}")
        if args.output:
            log(f"veil: the original faces, one per track: {args.output}")
        return
    if args.output is None:
        raise InputError("give where the restored video goes: -o RESTORED.mkv")
    if not args.track and not args.all_tracks:
        raise InputError("say whose faces to restore: --track ID (see --list), or --all-tracks")
    recover(args.video, key, args.output, tracks=None if args.all_tracks else args.track, start_s=args.start, end_s=args.end,
            lossy=args.lossy, sidecar=args.sidecar, partial=args.partial, log=log)  # fmt: skip


def inspect(path: str) -> str:
    """What a file says about itself: Veil's tags, its sidecar, its C2PA manifest."""
    try:
        with av.open(path) as container:
            tags = dict(container.metadata)
    except (av.FFmpegError, OSError) as error:
        raise InputError(f"cannot read {path}: {reason(error)}") from None
    lines = [f"{path}:"]
    if "veil_anonymised" not in tags:
        lines.append("  no mark of Veil (not anonymised by Veil, or its tags were stripped)")
    for name in TAGS:
        if name in tags:
            lines.append(f"  {name.removeprefix('veil_').replace('_', ' ')}: {tags[name]}")
    sidecar = sidecar_path(path)
    lines.append(f"  recovery sidecar: {sidecar if sidecar.exists() else 'none beside it'}")
    return "\n".join(lines)

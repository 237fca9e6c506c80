"""The controller's key pair and the wrapping of data keys for it (X25519 + HKDF-SHA256 +
AES-256-GCM, all from ``cryptography``).

The machine that anonymises holds only public keys: it can wrap a fresh data key for each
recipient, never unwrap one. Each wrap uses a new ephemeral X25519 key; the key-encryption key
is HKDF of the shared secret, bound to the sidecar, the label (which track's key, or the chain
key) and both public keys, so a wrapped key copied elsewhere does not open.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.errors import InputError, OutputError, reason

WRAP_INFO = b"veil recovery key wrap v1"
RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


@dataclass(frozen=True)
class Recipient:
    """A public key that originals are sealed for; ``fingerprint`` names it in the sidecar."""

    key: X25519PublicKey
    source: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def fingerprint(key: X25519PublicKey) -> str:
    return hashlib.sha256(key.public_bytes(**RAW)).hexdigest()[:32]


def generate(prefix: str | Path, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write PREFIX.pub and PREFIX.key (mode 0600, encrypted under ``passphrase`` if given);
    an existing file is never overwritten."""
    public_path, private_path = Path(f"{prefix}.pub"), Path(f"{prefix}.key")
    for path in (public_path, private_path):
        if path.exists():
            raise InputError(f"{path} exists; keygen never overwrites a key (move it away first)")
    private = X25519PrivateKey.generate()
    protection = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as error:
        raise OutputError(f"cannot write the key pair {prefix}: {reason(error)}") from None
    return public_path, private_path


def load_public(path: str | Path) -> Recipient:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as error:
        raise InputError(f"cannot read recovery key {path}: {reason(error)}") from None
    except ValueError:
        raise InputError(f"{path} is not a public key (give the .pub file `veil keygen` wrote)") from None
    if not isinstance(key, X25519PublicKey):
        raise InputError(f"{path} is a {type(key).__name__}: recovery keys are X25519 (make one with `veil keygen`)")
    return Recipient(key, str(path))


def load_private(path: str | Path, passphrase: bytes | None = None) -> X25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read key {path}: {reason(error)}") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError:
        which = "needs its passphrase (VEIL_KEY_PASSPHRASE, or answer the prompt)" if not passphrase else "is not encrypted: give no passphrase"
        raise InputError(f"key {path} {which}") from None
    except ValueError:
        raise InputError(f"cannot open key {path}: wrong passphrase, or not a private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise InputError(f"{path} is a {type(key).__name__}: recovery keys are X25519 (made by `veil keygen`)")
    return key


def _kek(shared: bytes, context: bytes, ephemeral: bytes, recipient: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=WRAP_INFO + context + ephemeral + recipient)
    return AESGCM(hkdf.derive(shared))


def wrap(data_key: bytes, recipient: Recipient, context: bytes) -> dict:
    """``data_key`` sealed for one recipient, as JSON-able hex strings."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(**RAW)
    nonce = os.urandom(12)
    kek = _kek(ephemeral.exchange(recipient.key), context, ephemeral_raw, recipient.key.public_bytes(**RAW))
    return {"recipient": recipient.fingerprint, "ephemeral": ephemeral_raw.hex(), "nonce": nonce.hex(),
            "wrapped": kek.encrypt(nonce, data_key, context).hex()}  # fmt: skip


def unwrap(entries: list[dict], private: X25519PrivateKey, context: bytes) -> bytes | None:
    """The data key of the entry made for ``private``'s public key; None if there is none
    (the sidecar was not sealed for this key)."""
    public = private.public_key()
    for entry in entries:
        if entry["recipient"] != fingerprint(public):
            continue
        ephemeral = bytes.fromhex(entry["ephemeral"])
        kek = _kek(private.exchange(X25519PublicKey.from_public_bytes(ephemeral)), context, ephemeral, public.public_bytes(**RAW))
        try:
            return kek.decrypt(bytes.fromhex(entry["nonce"]), bytes.fromhex(entry["wrapped"]), context)
        except InvalidTag:
            raise InputError("a wrapped key does not open: the sidecar was modified") from None
    return None

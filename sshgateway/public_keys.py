"""People's SSH public keys: parse one pasted OpenSSH line, check it, fingerprint it. Pure.

The SSH gateway identifies a person by the fingerprint of the key their client offers
(:meth:`quotas.store.Store.ssh_key_owner`), so a key is accepted only when it is exactly one
public key of a type the gateway trusts: Ed25519, ECDSA (NIST P-256/384/521) or RSA of at
least 3072 bits, without ``authorized_keys`` options (``command=``, ``from=``, ...) that the
gateway would not honour. The fingerprint is OpenSSH's: ``SHA256:`` and the unpadded base64
of the SHA-256 of the key blob, as ``ssh-keygen -lf`` prints it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

MIN_RSA_BITS = 3072
MAX_TITLE = 200
MAX_TEXT = 16_384  # an RSA-16384 public key is about 2,800 characters
ECDSA_CURVES = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
ALLOWED = "ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 3072 bits"
HOW_TO = "Paste the one line of your .pub file, e.g. the output of: ssh-keygen -t ed25519 && cat ~/.ssh/id_ed25519.pub"


class KeyRejected(ValueError):
    """The pasted text is not a key the gateway accepts; the message says why and what to do."""


@dataclass(frozen=True)
class PublicKey:
    """One checked public key: ``text`` is the canonical ``<type> <base64>`` (comment dropped)."""

    type: str
    blob: bytes
    bits: int
    comment: str

    @property
    def text(self) -> str:
        return f"{self.type} {base64.b64encode(self.blob).decode()}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key blob: ``SHA256:<unpadded base64>``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_key(text: str) -> PublicKey:
    """The key in ``text`` (one OpenSSH public key line), or :class:`KeyRejected` saying why not."""
    if not isinstance(text, str) or not text.strip():
        raise KeyRejected(f"The key is empty. {HOW_TO}")
    if len(text) > MAX_TEXT:
        raise KeyRejected(f"The key is {len(text)} characters long; a public key line has at most {MAX_TEXT}. {HOW_TO}")
    stripped = text.strip()
    if "PRIVATE KEY" in stripped:
        raise KeyRejected(
            "This is a PRIVATE key: never paste it anywhere, and consider it exposed (make a new key pair)."
            " Paste the public key instead: the .pub file next to it."
        )
    if stripped.startswith("---- BEGIN SSH2 PUBLIC KEY"):
        raise KeyRejected(
            "This is an SSH2 (RFC 4716) public key. Convert it to the OpenSSH format first:"
            " ssh-keygen -i -f key.pub, and paste the line it prints."
        )
    lines = [line for line in stripped.splitlines() if line.strip()]
    if len(lines) > 1:
        raise KeyRejected(f"Paste one key at a time: the text has {len(lines)} lines. Add each key separately.")
    fields = lines[0].split(None, 2)
    key_type = fields[0]
    if key_type not in ("ssh-ed25519", "ssh-rsa", *ECDSA_CURVES):
        if len(fields) > 1 and _known_type(fields[1]):
            raise KeyRejected(
                f"The key starts with options ({key_type[:60]!r}); the gateway ignores authorized_keys options,"
                " so it accepts keys without them. Paste only the '<type> <key> [comment]' part."
            )
        if key_type in ("ssh-dss", "ssh-dsa"):
            raise KeyRejected(f"DSA keys are not accepted (too weak). Use {ALLOWED}. {HOW_TO}")
        if key_type.startswith("sk-") or "-cert-v01@openssh.com" in key_type:
            raise KeyRejected(f"{key_type} keys are not accepted here. Use {ALLOWED}.")
        raise KeyRejected(f"This is not an OpenSSH public key (it starts with {key_type[:40]!r}). {HOW_TO}")
    if len(fields) < 2:
        raise KeyRejected(f"The key has a type ({key_type}) but no key data after it. {HOW_TO}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyRejected(f"The key data after {key_type} is not valid base64 (cut or mistyped?). {HOW_TO}") from None
    comment = fields[2].strip() if len(fields) > 2 else ""
    bits = _check_blob(key_type, blob)
    return PublicKey(type=key_type, blob=blob, bits=bits, comment=comment)


def _known_type(word: str) -> bool:
    return word in ("ssh-ed25519", "ssh-rsa", "ssh-dss", *ECDSA_CURVES) or word.startswith("sk-")


def _check_blob(key_type: str, blob: bytes) -> int:
    """The key's size in bits, after checking that the blob is a well-formed key of ``key_type``."""
    broken = KeyRejected(f"The {key_type} key data is damaged (cut or mistyped?). {HOW_TO}")
    try:
        parts, rest = _strings(blob, {"ssh-ed25519": 2, "ssh-rsa": 3}.get(key_type, 3))
    except ValueError:
        raise broken from None
    if rest or parts[0].decode(errors="replace") != key_type:
        raise broken
    if key_type == "ssh-ed25519":
        if len(parts[1]) != 32:
            raise broken
        return 256
    if key_type == "ssh-rsa":
        modulus = int.from_bytes(parts[2], "big")
        if parts[2][:1] and parts[2][0] & 0x80 or modulus == 0 or int.from_bytes(parts[1], "big") < 3:
            raise broken
        bits = modulus.bit_length()
        if bits < MIN_RSA_BITS:
            raise KeyRejected(
                f"This RSA key has {bits} bits; the gateway accepts RSA keys of at least {MIN_RSA_BITS} bits."
                " Make a new key: ssh-keygen -t ed25519 (or ssh-keygen -t rsa -b 4096)."
            )
        return bits
    curve, point_len = ECDSA_CURVES[key_type]
    if parts[1].decode(errors="replace") != curve or len(parts[2]) != point_len or parts[2][0] != 4:
        raise broken
    return int(curve.removeprefix("nistp"))


def _strings(blob: bytes, count: int) -> tuple[list[bytes], bytes]:
    """``count`` SSH wire-format strings (uint32 length + bytes) from ``blob``, and what follows."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(blob):
            raise ValueError("short")
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        pos += 4
        if pos + length > len(blob):
            raise ValueError("short")
        out.append(blob[pos : pos + length])
        pos += length
    return out, blob[pos:]


def clean_title(title: str | None, key: PublicKey) -> str:
    """The title people see for a key: the one given, else the key's comment, else its type."""
    text = " ".join((title or "").split()) or key.comment or key.type
    if len(text) > MAX_TITLE:
        raise KeyRejected(f"The title is {len(text)} characters long; keep it under {MAX_TITLE}.")
    return text

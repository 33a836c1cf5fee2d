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

from i18n import N_, Text, _

MIN_RSA_BITS = 3072
MAX_TITLE = 200
MAX_TEXT = 16_384  # an RSA-16384 public key is about 2,800 characters
ECDSA_CURVES = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
ALLOWED = N_("ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least {bits} bits")
HOW_TO = N_(
    "Paste the one line of your .pub file, e.g. the output of: ssh-keygen -t ed25519 && cat ~/.ssh/id_ed25519.pub"
)


def _allowed() -> Text:
    return _(ALLOWED, bits=MIN_RSA_BITS)


def _how_to() -> Text:
    return _(HOW_TO)


class KeyRejected(ValueError):
    """The pasted text is not a key the gateway accepts; ``message`` says why and what to do (an
    :class:`i18n.Text`, said in the person's language where it is shown; ``str(e)`` is its English)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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
        raise KeyRejected(_("The key is empty. {how_to}", how_to=_how_to()))
    if len(text) > MAX_TEXT:
        raise KeyRejected(
            _(
                "The key is {length} characters long; a public key line has at most {most}. {how_to}",
                length=len(text),
                most=MAX_TEXT,
                how_to=_how_to(),
            )
        )
    stripped = text.strip()
    if "PRIVATE KEY" in stripped:
        raise KeyRejected(
            _(
                "This is a PRIVATE key: never paste it anywhere, and consider it exposed (make a new key pair)."
                " Paste the public key instead: the .pub file next to it."
            )
        )
    if stripped.startswith("---- BEGIN SSH2 PUBLIC KEY"):  # i18n: the RFC 4716 format's first line
        raise KeyRejected(
            _(
                "This is an SSH2 (RFC 4716) public key. Convert it to the OpenSSH format first:"
                " ssh-keygen -i -f key.pub, and paste the line it prints."
            )
        )
    lines = [line for line in stripped.splitlines() if line.strip()]
    if len(lines) > 1:
        raise KeyRejected(
            _("Paste one key at a time: the text has {lines} lines. Add each key separately.", lines=len(lines))
        )
    fields = lines[0].split(None, 2)
    key_type = fields[0]
    if key_type not in ("ssh-ed25519", "ssh-rsa", *ECDSA_CURVES):
        if len(fields) > 1 and _known_type(fields[1]):
            raise KeyRejected(
                _(
                    "The key starts with options ({options}); the gateway ignores authorized_keys options, so it"
                    " accepts keys without them. Paste only the '<type> <key> [comment]' part.",
                    options=repr(key_type[:60]),
                )
            )
        if key_type in ("ssh-dss", "ssh-dsa"):
            raise KeyRejected(
                _("DSA keys are not accepted (too weak). Use {allowed}. {how_to}", allowed=_allowed(), how_to=_how_to())
            )
        if key_type.startswith("sk-") or "-cert-v01@openssh.com" in key_type:
            raise KeyRejected(_("{type} keys are not accepted here. Use {allowed}.", type=key_type, allowed=_allowed()))
        raise KeyRejected(
            _(
                "This is not an OpenSSH public key (it starts with {start}). {how_to}",
                start=repr(key_type[:40]),
                how_to=_how_to(),
            )
        )
    if len(fields) < 2:
        raise KeyRejected(
            _("The key has a type ({type}) but no key data after it. {how_to}", type=key_type, how_to=_how_to())
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyRejected(
            _(
                "The key data after {type} is not valid base64 (cut or mistyped?). {how_to}",
                type=key_type,
                how_to=_how_to(),
            )
        ) from None
    comment = fields[2].strip() if len(fields) > 2 else ""
    bits = _check_blob(key_type, blob)
    return PublicKey(type=key_type, blob=blob, bits=bits, comment=comment)


def _known_type(word: str) -> bool:
    return word in ("ssh-ed25519", "ssh-rsa", "ssh-dss", *ECDSA_CURVES) or word.startswith("sk-")


def _check_blob(key_type: str, blob: bytes) -> int:
    """The key's size in bits, after checking that the blob is a well-formed key of ``key_type``."""
    broken = KeyRejected(
        _("The {type} key data is damaged (cut or mistyped?). {how_to}", type=key_type, how_to=_how_to())
    )
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
                _(
                    "This RSA key has {bits} bits; the gateway accepts RSA keys of at least {least} bits. Make a"
                    " new key: ssh-keygen -t ed25519 (or ssh-keygen -t rsa -b 4096).",
                    bits=bits,
                    least=MIN_RSA_BITS,
                )
            )
        return bits
    curve, point_len = ECDSA_CURVES[key_type]
    if parts[1].decode(errors="replace") != curve or len(parts[2]) != point_len or parts[2][0] != 4:
        raise broken
    return int(curve.removeprefix("nistp"))


def _strings(blob: bytes, count: int) -> tuple[list[bytes], bytes]:
    """``count`` SSH wire-format strings (uint32 length + bytes) from ``blob``, and what follows."""
    out, pos = [], 0
    for _index in range(count):
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
        raise KeyRejected(
            _("The title is {length} characters long; keep it under {most}.", length=len(text), most=MAX_TITLE)
        )
    return text

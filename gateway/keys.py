"""Secrets handed to callers once and stored only as SHA-256 hashes.

A key looks like `oz_<prefix>_<secret>`: the prefix finds the row with one indexed lookup,
the hash of the whole key is compared in constant time. The secret has 256 bits of entropy,
so a fast hash is the right tool (as for GitHub or Stripe keys); slow password hashing
would only add latency to every request."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    key_hash: str


def key_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key_generate(kind: str) -> NewKey:
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    plaintext = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext=plaintext, prefix=prefix, key_hash=key_hash(plaintext))


def key_prefix(kind: str, plaintext: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not shaped like one of ours."""
    head = f"{kind}_"
    if len(plaintext) > 200 or not plaintext.startswith(head):
        return None
    prefix = plaintext[len(head): len(head) + PREFIX_LENGTH]
    if len(prefix) != PREFIX_LENGTH or plaintext[len(head) + PREFIX_LENGTH: len(head) + PREFIX_LENGTH + 1] != "_":
        return None
    if not all(c in "0123456789abcdef" for c in prefix):  # key_generate makes hex; keeps NULs out of SQL
        return None
    return prefix


def hash_matches(digest: str, stored_hash: str) -> bool:
    """Compare a presented key's hash with a stored one, in constant time."""
    return hmac.compare_digest(digest, stored_hash)


def key_matches(plaintext: str, stored_hash: str) -> bool:
    return hash_matches(key_hash(plaintext), stored_hash)

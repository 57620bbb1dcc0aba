"""Value cipher and key derivation costs.

Run: python benchmarks/bench_crypto.py

Seal and open of 10,000 small values against a bare loop of ``os.urandom(12)`` plus
``AESGCM.encrypt`` (one reused AESGCM object) on the same values and associated data,
and the cost of one call of each passphrase KDF at its defaults. Each figure is the
best of several rounds, to keep scheduler noise out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.crypto import ValueCipher, generate_data_key
from veil.providers import passphrase

N = 10_000
ROUNDS = 7


def best(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    values = [f"password-{i:06d}-{os.urandom(4).hex()}" for i in range(N)]
    aads = [f"stack\x00dev\x00path\x00resources.{i}.password".encode() for i in range(N)]
    cipher = ValueCipher(generate_data_key())
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    pairs = list(zip(values, aads, strict=True))

    def bare_encrypt() -> list[bytes]:
        urandom, encrypt = os.urandom, aead.encrypt
        out = []
        for value, aad in pairs:
            nonce = urandom(12)
            out.append(nonce + encrypt(nonce, value.encode(), aad))
        return out

    bare = bare_encrypt()

    def bare_decrypt() -> list[bytes]:
        decrypt = aead.decrypt
        return [decrypt(b[:12], b[12:], aad) for b, aad in zip(bare, aads, strict=True)]

    def seal() -> list[str]:
        s = cipher.seal
        return [s(value, aad) for value, aad in pairs]

    tokens = seal()

    def open_() -> list[object]:
        o = cipher.open
        return [o(t, aad) for t, aad in zip(tokens, aads, strict=True)]

    assert open_() == values
    t_enc, t_dec, t_seal, t_open = best(bare_encrypt), best(bare_decrypt), best(seal), best(open_)
    us = 1e6 / N
    print(f"{N} small str values (best of {ROUNDS})")
    print(f"  bare urandom+encrypt {t_enc * us:6.2f} us/value")
    print(f"  bare decrypt         {t_dec * us:6.2f} us/value")
    print(f"  seal                 {t_seal * us:6.2f} us/value  {t_seal / t_enc:.2f}x bare encrypt")
    print(f"  open                 {t_open * us:6.2f} us/value  {t_open / t_enc:.2f}x bare encrypt")
    print(f"  open                 {t_open / t_dec:.2f}x bare decrypt")
    both = (t_seal + t_open) / (t_enc + t_dec)
    print(f"  seal+open            {both:.2f}x bare encrypt+decrypt")

    salt = os.urandom(16)
    defaults = dict(passphrase.ARGON2_DEFAULTS)
    argon = best(lambda: passphrase._derive(os.urandom(8), passphrase.ARGON2ID, defaults, salt), 3)
    pbkdf2 = best(
        lambda: passphrase._derive(
            os.urandom(8),
            passphrase.PBKDF2,
            {"iterations": passphrase.PBKDF2_DEFAULT_ITERATIONS},
            salt,
        ),
        3,
    )
    print("key derivation, one call (once per process per passphrase and salt)")
    print(f"  argon2id 64 MiB, 3 passes, 4 lanes   {argon * 1e3:7.1f} ms")
    print(f"  pbkdf2-sha256 600,000 iterations     {pbkdf2 * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()

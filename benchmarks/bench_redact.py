"""Log redaction: lines per second through a logger with ``install_log_filter()``,
against the same logger without it, as the number of known secrets grows.

Run: python benchmarks/bench_redact.py [--sizes 100,10000,100000] [--lines 20000]

The logger writes through a ``StreamHandler`` (to ``os.devnull``) with a timestamped
format. Its lines are formatted from a few arguments (host, user, a counter, a request
id); one line in ten carries a known secret, which the filter masks. Secrets look like
real ones: API tokens sharing a prefix (``sk_live_``, ``ghp_``), passwords and
database URLs, 12 to 52 characters. For each size, the secrets are made first (with
``veil.Secret``) and taken into the index, then the same lines are logged without the
filter and with it, in alternate rounds; each figure is the best of ``--rounds`` rounds
of CPU time (``time.process_time``).

"New secrets between lines" is the case that used to copy the whole set of secrets
for the first line after any new secret: 1,000 new secrets, then 100 lines, ten times
over; and one new secret before each line, for ``--lines`` lines. These run after the
largest size, so on top of at least that many secrets. Both columns include making the
secrets: the last column, what the filter adds to each line, is the figure to read.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable

import veil

_counter = itertools.count()


def make_secrets(n: int) -> list[str]:
    """``n`` new known secrets, of the shapes real programs hold."""
    made = []
    for _ in range(n):
        i = next(_counter)
        kind = i % 4
        if kind == 0:
            value = f"sk_live_{secrets.token_hex(12)}"
        elif kind == 1:
            value = f"ghp_{secrets.token_urlsafe(27)}"
        elif kind == 2:
            value = f"pw-{i}-{secrets.token_urlsafe(9)}"
        else:
            value = f"postgres://app:{secrets.token_hex(8)}@db{i}.internal:5432/orders"
        made.append(veil.Secret(value).reveal())
    return made


def make_logger(stream: object) -> logging.Logger:
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("bench.redact")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def log_lines(logger: logging.Logger, count: int, known: list[str]) -> None:
    info = logger.info
    for i in range(count):
        if i % 10 == 0:
            info("connecting to %s with %s", "db.internal:5432", known[i % len(known)])
        else:
            info(
                "request %d from %s for /api/v1/orders/%d took %.1f ms (id %s)",
                i,
                "deploy-bot",
                i * 7,
                12.5,
                "req-3f9a2c71",
            )


def cpu_time(fn: Callable[[], None]) -> float:
    """CPU seconds this process spent in ``fn``: steadier than wall time on a machine
    shared with other jobs."""
    t = time.process_time()
    fn()
    return time.process_time() - t


class FilterInstalled:
    """``install_log_filter()`` for a block, then the record factory from before."""

    def __enter__(self) -> None:
        self.handle = veil.install_log_filter()

    def __exit__(self, *exc: object) -> None:
        self.handle.uninstall()


def measure(label: str, run: Callable[[], None], lines: int, rounds: int) -> None:
    """Print lines per second of ``run`` without and with the filter (rounds
    interleaved, best of each), their ratio, and what the filter adds to each line."""
    with FilterInstalled():
        run()  # the index takes in every secret made so far
    plain, filtered = [], []
    for _ in range(rounds):
        plain.append(cpu_time(run))
        with FilterInstalled():
            filtered.append(cpu_time(run))
    without, with_filter = min(plain), min(filtered)
    print(
        f"{label:<36} {lines / without:>13,.0f} {lines / with_filter:>12,.0f}"
        f" {with_filter / without:>6.2f}x {(with_filter - without) / lines * 1e6:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lines: int = args.lines
    rounds: int = args.rounds

    with open(os.devnull, "w") as devnull:
        logger = make_logger(devnull)
        print(
            f"{'case':<36} {'lines/s plain':>13} {'with filter':>12} {'ratio':>7} {'+µs/line':>8}"
        )
        known: list[str] = []
        for size in sizes:
            known = known + make_secrets(size - len(known))
            lines_with = functools.partial(log_lines, logger, lines, known)
            measure(f"{size:,} known secrets", lines_with, lines, rounds)

        def thousand_then_hundred() -> None:
            for _ in range(10):
                log_lines(logger, 100, make_secrets(1000))

        def one_per_line() -> None:
            for _ in range(lines):
                log_lines(logger, 1, make_secrets(1))

        # Both columns include making the secrets; the last column is what the filter adds.
        measure("+1,000 new secrets per 100 lines", thousand_then_hundred, 1000, rounds)
        measure("+1 new secret per line", one_per_line, lines, rounds)


if __name__ == "__main__":
    main()

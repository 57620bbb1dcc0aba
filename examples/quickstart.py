"""veil quickstart: a small infrastructure program whose secrets never reach disk in clear.

It "provisions" a database whose password is generated and secret, builds the
connection string with ``Output.format`` (secret too, because the password is), reads
an API token from secure config, exports outputs, saves the stack, reopens it, prints
the outputs with secrets masked, and checks that no plaintext was written anywhere.

Run it from any folder:

    python examples/quickstart.py            # uses ./veil-quickstart as project folder
    VEIL_PASSPHRASE=... python examples/quickstart.py --dir /tmp/demo

The passphrase comes from VEIL_PASSPHRASE; without it a demo passphrase is used and
announced.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

import veil
from veil import Output, Stack

DEMO_PASSPHRASE = "correct horse battery staple (demo only)"
STACK = "dev"

log = logging.getLogger("quickstart")


class Database:
    """A stand-in for a cloud database resource: its outputs arrive as Outputs."""

    def __init__(self, name: str, *, password: Output[str]) -> None:
        self.name = name
        self.host = Output.from_input(f"{name}.db.internal")
        self.port = Output.from_input(5432)
        self.password = password


def program(stack: Stack) -> None:
    """The infrastructure program: what a user writes."""
    config = stack.config
    region = config.get("app:region", "eu-west-1")
    # A generated password: secret from the moment it exists.
    password = veil.secret(secrets.token_urlsafe(18))
    db = Database("orders", password=password)
    # Derived values stay secret: this string holds the password.
    url = Output.format("postgres://app:{0}@{1}:{2}/orders", db.password, db.host, db.port)
    token = config.require_secret("app:api_token")

    log.info("database password is %s", veil.reveal(password))  # the log filter masks it
    stack.export("region", region)
    stack.export("db_host", db.host)
    stack.export("db_url", url)
    stack.export("api_token", token)
    # Only the secret field of a dict is sealed; the rest stays readable in the state.
    stack.export("settings", {"replicas": 2, "password": db.password})


def passphrase() -> str:
    value = os.environ.get("VEIL_PASSPHRASE")
    if value:
        return value
    print(f"VEIL_PASSPHRASE is not set: using the demo passphrase {DEMO_PASSPHRASE!r}.")
    print("Set VEIL_PASSPHRASE to protect a real stack.\n")
    os.environ["VEIL_PASSPHRASE"] = DEMO_PASSPHRASE
    return DEMO_PASSPHRASE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="veil-quickstart", help="project folder (created)")
    args = parser.parse_args(argv)
    project = Path(args.dir).resolve()
    project.mkdir(parents=True, exist_ok=True)
    backend = f"file://{project / '.veil'}"

    logging.basicConfig(level=logging.INFO, format="  log: %(message)s", stream=sys.stdout)
    veil.install_log_filter()
    passphrase()

    # 1. Create the stack on first run, open it afterwards.
    try:
        stack = Stack.open(STACK, backend=backend, project_dir=project)
        print(f"Opened stack {STACK!r} (serial {stack.serial}) in {project}")
    except veil.StackNotFoundError:
        stack = Stack.create(STACK, backend=backend, project_dir=project)
        print(f"Created stack {STACK!r} in {project}")
    with stack:
        if "app:api_token" not in stack.config:
            stack.config.set("app:api_token", "tok_" + secrets.token_hex(16), secret=True)
            stack.config.set("app:region", "eu-west-1")
        program(stack)
        stack.save()
        print(f"Saved stack {STACK!r} (serial {stack.serial})")

    # 2. Reopen it, as the next run (or another machine) would.
    with Stack.open(STACK, backend=backend, project_dir=project, lock=False) as stack:
        print("\nOutputs (secrets masked):")
        for name, value in sorted(stack.outputs.items()):
            if isinstance(value, dict):  # a dict prints its items' reprs: mask secrets as str
                value = {k: str(v) if veil.is_secret(v) else v for k, v in value.items()}
            shown = value
            print(f"  {name:<10} {shown}")
        plaintexts = [
            veil.reveal(stack.outputs["api_token"]),
            veil.reveal(stack.outputs["settings"]["password"]),
            veil.reveal(stack.outputs["db_url"]),
        ]

    # 3. Check every file veil wrote: no secret in clear.
    written = [p for p in project.rglob("*") if p.is_file()]
    leaks = [
        str(p.relative_to(project))
        for p in written
        for s in plaintexts
        if s.encode() in p.read_bytes()
    ]
    print(f"\nScanned {len(written)} files written by veil for the secrets' plaintext:", end=" ")
    if leaks:
        print("FOUND in " + ", ".join(sorted(set(leaks))))
        return 1
    print("none found.")
    print(f"State: {project / '.veil'}   Config: {project / f'veil.{STACK}.json'}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except veil.VeilError as exc:  # a wrong passphrase, a locked stack, ...: one line
        print(f"quickstart: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

#!/usr/bin/env python3
"""Runs the shell commands of README.md as written, against runtimes it starts.

Every fenced ```sh block of README.md is either run or skipped with a stated reason
(BLOCKS below, matched by the block's first command); a block that matches no entry
fails the check, so a new command cannot slip in unexamined. The blocks that run are
concatenated, in README order, into one bash script with `set -euo pipefail`, after
these rewrites (and nothing else):

- `cargo run --release` (a server) and `./target/release/frontdoor &` start the built
  binary in the background (their environment prefixes kept) and wait until
  `/readyz` answers 200; a server already running is stopped first;
- `cargo run --release -- ARGS` and `./target/release/<bin>` run the built binaries;
  `cargo build --release ...` is a no-op (the binaries are built already);
- `data/frontdoor.db` (the embedded store's file) becomes the check's own SQLite file;
- port 8080 becomes a free port (also the simulator's default target), the PostgreSQL database `frontdoor` a fresh name
  (dropped at the end), and the simulator runs for at most a few seconds;
- `curl` fails on any HTTP error status (4xx, 5xx), so a request without its token,
  a wrong token or a missing database fails the check; a request whose comment names
  an error status (`# 422, ...`) must answer exactly that status; the simulator fails it when
  its summary reports refused requests (401, 429) or 5xx answers.

Usage: python3 .ci/docs-check.py [target-dir]   (default: target/debug)
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# First command of the block (a prefix) -> "run" or the reason it is skipped.
BLOCKS = [
    ("cargo run --release", "run"),
    ('export AUTH="authorization: Bearer dev-admin-local-token"', "run"),
    # A reminder leaving: waits 65 s for the 1-hour reminder of a visit 61 minutes away.
    ("STARTS=$(date -u -d '+61 min'", "run"),
    ("curl -s -XPOST 'localhost:8080/fhir/r4?site=north'", "run"),
    # The virtual agent: an IVA session, three answers (the last one an unknown intent, 422).
    ("curl -s -XPOST localhost:8080/v1/events -H \"$AUTH\"", "run"),
    ("cargo run --release -- --help", "run"),
    # What if: a replay of the day the blocks above recorded, with the example patch.
    ("./target/release/frontdoor replay", "run"),
    ("createdb -h 127.0.0.1 -U postgres frontdoor", "run"),
    # The same block if its createdb went missing: it runs, and fails as a fresh server would.
    ("FRONTDOOR__STORE__URL=postgres://", "run"),
    ("cargo build --release --workspace", "run"),
    ("cargo test --workspace", "skip: .ci/run runs the tests itself"),
    ("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange", "run"),
    (
        "cargo build --release",
        "skip: three nodes on fixed ports 8081-8083; tests/api/cluster.rs runs the same"
        " cluster (same settings) on free ports",
    ),
    (
        "docker compose up -d --build",
        "skip: needs Docker, which CI does not have; tests/api/docs.rs checks the compose"
        " file's ports and mounts",
    ),
]

PRELUDE = r"""
set -euo pipefail
SERVER_PID=
DOCS_LOG="$DOCS_WORK/server.log"
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
trap stop_server EXIT
start_server() {
  stop_server
  "$FD" "$@" >"$DOCS_LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 120); do
    if command curl -fsS -H 'authorization: Bearer dev-monitor-local-token' \
        "localhost:$FRONTDOOR__APPLICATION__PORT/readyz" >/dev/null 2>&1; then
      echo "[docs] runtime ready (pid $SERVER_PID)"; return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "[docs] the runtime exited:"; tail -n 30 "$DOCS_LOG"; return 1
    fi
    sleep 0.5
  done
  echo "[docs] the runtime did not become ready:"; tail -n 30 "$DOCS_LOG"; return 1
}
curl() { command curl --fail-with-body "$@"; }
# A request the README shows failing on purpose (its comment names the status, e.g.
# "# 422, handed over") must answer exactly that status.
expect_status() {
  local want=$1 got
  shift
  got=$(command curl -s -o /dev/null -w '%{http_code}' "$@")
  if [ "$got" != "$want" ]; then echo "[docs] expected HTTP $want, got $got" >&2; return 1; fi
  echo "[docs] HTTP $got, as the README says"
}
createdb() {
  # "once, if not made above": an existing database is fine, anything else is not.
  local out
  if ! out=$(command createdb "$@" 2>&1); then
    case "$out" in *"already exists"*) ;; *) echo "$out" >&2; return 1;; esac
  fi
}
simulate() {
  local out
  out=$("$SIM" "$@")
  echo "$out"
  if echo "$out" | grep -Eq 'refused with (401|429)|5xx [1-9]'; then
    echo "[docs] the simulator's requests were refused or failed"; return 1
  fi
}
"""


def commands_of(block):
    """The block's first command (comments and blank lines skipped)."""
    for line in block.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            return s
    return ""


def classify(block):
    first = commands_of(block)
    # The longest matching prefix wins ("cargo build --release --workspace" before
    # "cargo build --release").
    matches = [(p, a) for p, a in BLOCKS if first.startswith(p)]
    if not matches:
        return None
    return max(matches, key=lambda m: len(m[0]))[1]


def expected_statuses(block):
    """Lines that start a `curl` whose command (continuation lines included) ends in a
    comment naming an error status (`# 422 ...`): line index -> status."""
    lines = block.splitlines()
    found, start = {}, None
    for i, line in enumerate(lines):
        if start is None:
            start = i
        code, _, comment = line.partition("   #")
        if code.rstrip().endswith("\\"):
            continue
        m = re.match(r"\s*([45]\d\d)\b", comment)
        if m and lines[start].lstrip().startswith("curl "):
            found[start] = m.group(1)
        start = None
    return found


def rewrite(block, db, port):
    out = []
    expected = expected_statuses(block)
    for i, line in enumerate(block.splitlines()):
        if i in expected:
            line = line.replace("curl ", f"expect_status {expected[i]} ", 1)
        code, sep, comment = line.partition("   #")
        code = re.sub(r"cargo run --release -- ", '"$FD" ', code)
        code = re.sub(r"cargo run --release\s*$", "start_server", code)
        code = re.sub(r"\./target/release/frontdoor\s*&\s*$", "start_server", code)
        code = re.sub(r"\./target/release/frontdoor-simulate\b", "simulate", code)
        code = re.sub(r"\./target/release/frontdoor\b", '"$FD"', code)
        code = re.sub(r"^cargo build --release.*$", ":", code.strip()) if code.strip().startswith("cargo build --release") else code
        # A number, not a variable: the README quotes some URLs in single quotes.
        code = code.replace("localhost:8080", f"localhost:{port}")
        code = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        code = re.sub(r"(5432/)frontdoor\b", r"\g<1>" + db, code)
        # The embedded store's file: the check's own SQLite database.
        code = code.replace("data/frontdoor.db", '"$DOCS_WORK/docs.db"')
        # Reports go to the check's own directory, not the checkout.
        code = code.replace("--html report.html", '--html "$DOCS_WORK/report.html"')
        code = re.sub(r"(createdb .*-U postgres )frontdoor\b", r"\g<1>" + db, code)
        if code.lstrip().startswith("simulate"):
            code = re.sub(r"--max-seconds \d+", "", code)
            code = code.rstrip() + f" --max-seconds 6 --target http://127.0.0.1:{port}"
        out.append(code + (sep + comment if sep and not code.rstrip().endswith("\\") else ""))
    return "\n".join(out)


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug")
    fd = os.path.join(target, "frontdoor")
    sim = os.path.join(target, "frontdoor-simulate")
    for b in (fd, sim):
        if not os.access(b, os.X_OK):
            sys.exit(f"[docs] missing {b} (cargo build --workspace --bins)")
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", readme, re.S | re.M)
    if len(blocks) < 5:
        sys.exit(f"[docs] found only {len(blocks)} shell blocks in README.md")
    db = "frontdoor_docs_" + secrets.token_hex(4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = [PRELUDE]
    ran = skipped = 0
    for i, block in enumerate(blocks, 1):
        action = classify(block)
        first = commands_of(block)
        if action is None:
            sys.exit(
                f"[docs] README.md block {i} ({first!r}) is not classified: add it to BLOCKS"
                " in .ci/docs-check.py (run it, or say why it cannot run in CI)"
            )
        if action != "run":
            print(f"[docs] block {i}: {first!r}: {action}")
            skipped += 1
            continue
        ran += 1
        print(f"[docs] block {i}: {first!r}: run")
        script.append(f'echo "[docs] --- README block {i}"')
        # A server a block starts serves the blocks after it (the README's order),
        # until the next block starts another.
        script.append(rewrite(block, db, port))
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ)
        env.update(
            {
                "FD": fd,
                "SIM": sim,
                "DOCS_WORK": work,
                "FRONTDOOR_ENVIRONMENT": "local",
                "FRONTDOOR__APPLICATION__PORT": str(port),
                "FRONTDOOR__STORE__URL": f"sqlite://{work}/docs.db",
                "FRONTDOOR__TELEMETRY__LEVEL": "warn",
                "FRONTDOOR__BROKER__QUEUE_PREFIX": f"docs{port}.ingest",
                "RUST_BACKTRACE": "0",
            }
        )
        env.pop("RUST_LOG", None)
        path = os.path.join(work, "readme.sh")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(script) + "\n")
        try:
            res = subprocess.run(["bash", path], cwd=ROOT, env=env, timeout=600)
        finally:
            subprocess.run(
                ["dropdb", "--if-exists", "-h", "127.0.0.1", "-U", "postgres", db],
                check=False,
            )
    if res.returncode != 0:
        sys.exit(f"[docs] README.md commands failed (exit {res.returncode})")
    print(f"[docs] README.md: {ran} blocks ran, {skipped} skipped with a reason")


if __name__ == "__main__":
    main()

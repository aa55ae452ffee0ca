#!/bin/sh
# The application of examples/sqlite: a small ledger in SQLite (WAL mode) that moves money
# between ten accounts, one transaction per transfer, continuously, through one long-lived
# connection (one sqlite3 process fed by this script).
#
#   app.sh init DB   create the database: WAL mode, ten accounts of 1000
#   app.sh run DB    write until SIGTERM or SIGINT (Ctrl-C), then print how many transfers
#                    are committed; the exit status is sqlite3's (0: no error)
#
# Each transfer is one transaction: a row in `transfers` and two balance updates. So any
# state the database can be in has sum(balance) = 10000, and every balance equals 1000 plus
# what it received minus what it sent.
#
# Environment:
#   APP_PAUSE         seconds between two transactions (default 0.02)
#   APP_BUSY_TIMEOUT  milliseconds a transaction waits for the write lock held by the
#                     quiesce hooks (or anyone) before it fails (default 90000: longer than
#                     the hooks ever hold it, see QUIESCE_MAX_HOLD in hooks/common.sh)
set -eu

usage() {
  echo "usage: app.sh init DB | app.sh run DB" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
db=$2
pause=${APP_PAUSE:-0.02}
busy=${APP_BUSY_TIMEOUT:-90000}

case $cmd in
init)
  mkdir -p "$(dirname "$db")"
  sqlite3 -batch -bail "$db" >/dev/null <<'SQL'
PRAGMA journal_mode=WAL;
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE transfers(id INTEGER PRIMARY KEY, at TEXT NOT NULL, src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL, memo BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
INSERT INTO accounts(id, balance) SELECT i, 1000 FROM n;
SQL
  echo "app: created $db"
  ;;
run)
  [ -f "$db" ] || { echo "app: $db does not exist (app.sh init $db first)" >&2; exit 1; }
  # The transfer: random accounts and amount, a memo of 200 to 3200 bytes so that pages change.
  txn="BEGIN IMMEDIATE;
INSERT INTO transfers(at, src, dst, amount, memo) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 1 + abs(random()) % 10, 1 + abs(random()) % 10, 1 + abs(random()) % 50, randomblob(200 + abs(random()) % 3000));
UPDATE accounts SET balance = balance - (SELECT amount FROM transfers WHERE id = last_insert_rowid()) WHERE id = (SELECT src FROM transfers WHERE id = last_insert_rowid());
UPDATE accounts SET balance = balance + (SELECT amount FROM transfers WHERE id = last_insert_rowid()) WHERE id = (SELECT dst FROM transfers WHERE id = last_insert_rowid());
COMMIT;"
  # Runs while this file exists: a signal removes it, the producer finishes the transaction
  # it is writing and stops, and sqlite3 commits what it was given and exits at the end of
  # its input.
  keep=$(mktemp "${TMPDIR:-/tmp}/replfs-sqlite-app.XXXXXX")
  trap 'rm -f "$keep"' INT TERM
  trap 'rm -f "$keep"' EXIT
  produce() {
    printf '.timeout %s\n' "$busy"
    while [ -e "$keep" ]; do
      printf '%s\n' "$txn"
      sleep "$pause"
    done
  }
  echo "app: writing to $db (pid $$)"
  # In the background, so that a signal reaches the trap above at once (a shell runs traps
  # only between commands, and `wait` is one it interrupts). sqlite3 runs in a session of
  # its own: Ctrl-C in a terminal would otherwise interrupt the statement it is running.
  produce | setsid sqlite3 -batch -bail "$db" &
  writer=$!
  status=0
  while :; do
    status=0
    wait "$writer" || status=$?
    kill -0 "$writer" 2>/dev/null || break
  done
  rm -f "$keep"
  wait || :
  n=$(sqlite3 -batch "$db" "SELECT count(*) FROM transfers;")
  echo "app: stopped; $n transfers committed"
  exit "$status"
  ;;
*)
  usage
  ;;
esac

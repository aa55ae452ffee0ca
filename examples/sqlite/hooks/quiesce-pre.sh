#!/bin/sh
# The pre-hook of examples/sqlite: brings the database to a known-good state and keeps it
# there until the cut is made.
#
#   1. hold-lock.sh, started in a session of its own, records this snapshot in the table
#      replfs_quiesce (committed), then takes the database's write lock and keeps it.
#      The application's next transaction waits for it (its busy timeout).
#   2. With the lock held, a checkpoint copies every committed page from the WAL into the
#      database file: the database file alone is then the whole database.
#   3. Exit 0: replfs holds writes, makes the cut, and runs quiesce-post.sh, which releases
#      the lock.
#
# Any failure releases the lock and exits non-zero: the snapshot is then crash-consistent
# (still a database SQLite recovers, from the file and its WAL together). Settings: see
# common.sh.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

fail() {
  log "failed: $*"
  echo "quiesce-pre: $*" >&2
  release || echo "quiesce-pre: the lock holder outlived SIGKILL" >&2
  exit 1
}
# Stopped by replfs (preTimeoutMs passed): let go of the lock before going.
trap 'fail "stopped by a signal"' TERM INT HUP

log "begin"
[ -f "$db" ] || fail "no database at $db (in $(pwd))"
command -v sqlite3 >/dev/null || fail "sqlite3 is not installed"

: > "$startfile"
setsid "$here/hold-lock.sh" "$db" "$snapshot" "$run" "$lock_timeout" "$max_hold" < /dev/null > "$outfile" 2> "$errfile" &

# Wait for "locked". sqlite3 gives up after the lock timeout and says why on stderr (as it
# does for anything else that goes wrong); the count of turns is only a backstop.
i=0
limit=$((lock_timeout * 20 + 100))
while ! grep -qx locked "$outfile" 2>/dev/null; do
  if [ -s "$errfile" ]; then fail "could not take the write lock: $(tail -n 1 "$errfile")"; fi
  i=$((i + 1))
  [ $i -le $limit ] || fail "no write lock after $((limit / 20)) s"
  sleep 0.05
done

# No writer can commit now. A passive checkpoint needs no lock of its own, and no reader
# is behind (the holder reads the newest state), so it backfills every frame.
result=$(sqlite3 -batch -bail "$db" ".timeout 5000" "PRAGMA wal_checkpoint(PASSIVE);" 2>&1) || fail "the checkpoint failed: $result"
old_ifs=$IFS
IFS='|'
# shellcheck disable=SC2086
set -- $result
IFS=$old_ifs
[ $# -eq 3 ] || fail "unexpected checkpoint result: $result"
frames=$2
copied=$3
# -1|-1: not in WAL mode; with the write lock held, the database file is whole anyway.
if [ "$frames" != "$copied" ]; then fail "the checkpoint copied $copied of $frames WAL frames"; fi
log "locked; checkpoint copied $copied of $frames WAL frames"
exit 0

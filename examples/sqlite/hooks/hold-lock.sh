#!/bin/sh
# hold-lock.sh DB SNAPSHOT RUN LOCK_TIMEOUT MAX_HOLD: started by quiesce-pre.sh in a session
# of its own (setsid), so that it outlives the pre-hook and leads a process group that
# quiesce-post.sh can end whole.
#
# Through one sqlite3 connection it records SNAPSHOT in the table replfs_quiesce
# (committed), then takes the database's write lock (BEGIN IMMEDIATE, waiting at most
# LOCK_TIMEOUT seconds for the application's transaction in progress) and prints "locked".
# It keeps the lock while sqlite3's input stays open: until its group is killed, or
# MAX_HOLD seconds have passed (the sleep ends, sqlite3 reads the end of its input, and
# the transaction, which changed nothing, is rolled back).
set -u
db=$1
snapshot=$2
run=$3
lock_timeout=$4
max_hold=$5
echo $$ > "$run/hold-$snapshot.pgid"
name=$(printf '%s' "$snapshot" | sed "s/'/''/g")
{
  printf '.timeout %s\n' "$((lock_timeout * 1000))"
  printf '%s\n' "CREATE TABLE IF NOT EXISTS replfs_quiesce(snapshot TEXT PRIMARY KEY, at TEXT NOT NULL);"
  printf '%s\n' "INSERT OR REPLACE INTO replfs_quiesce(snapshot, at) VALUES ('$name', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
  printf '%s\n' "BEGIN IMMEDIATE;" "SELECT 'locked';"
  exec sleep "$max_hold"
} | sqlite3 -batch -bail "$db"

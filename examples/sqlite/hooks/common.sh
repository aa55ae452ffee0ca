# Sourced by quiesce-pre.sh and quiesce-post.sh (not run on its own): their settings, their
# log, and how the write lock of one snapshot is released.
#
# From replfs (see "Quiesce hooks" in docs/cli.md): REPLFS_SNAPSHOT, the name the snapshot
# gets; REPLFS_PHASE, pre or post; REPLFS_PRE_STATUS, for the post-hook. Hooks run in the
# mount directory, so a relative APP_DB is a path inside the protected directory.
#
# From the policy's quiesce.env (see ../replfs.json):
#   APP_DB                the database, relative to the mount directory or absolute
#   QUIESCE_RUN           a directory of the hooks' own, outside the protected directory:
#                         the lock holder's files and the log hooks.log (created, mode 700)
#   QUIESCE_LOCK_TIMEOUT  seconds the pre-hook waits for the write lock (default 10): the
#                         pre-hook then fails and the snapshot is crash-consistent
#   QUIESCE_MAX_HOLD      seconds after which the holder lets go of the lock by itself, in
#                         case no post-hook ever comes (default 60); keep it above
#                         quiesce.preTimeoutMs + barrierTimeoutMs + postTimeoutMs, and the
#                         application's busy timeout above it

snapshot=${REPLFS_SNAPSHOT:?is not set: this script runs as a replfs quiesce hook}
db=${APP_DB:?is not set: the database, relative to the mount directory}
run=${QUIESCE_RUN:?is not set: a directory for the hooks, outside the protected one}
lock_timeout=${QUIESCE_LOCK_TIMEOUT:-10}
max_hold=${QUIESCE_MAX_HOLD:-60}
phase=${REPLFS_PHASE:-?}

# The hooks' own files are private (a hook inherits the umask of the mount daemon).
umask 077
mkdir -p "$run" || exit 1
# The holder of this snapshot's lock: its process group id (written by the holder itself),
# what its sqlite3 prints, what it says on stderr. `starting` exists from just before the
# holder is started until it is released.
pgidfile=$run/hold-$snapshot.pgid
outfile=$run/hold-$snapshot.out
errfile=$run/hold-$snapshot.err
startfile=$run/hold-$snapshot.starting

log() {
  printf '%s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$phase" "$snapshot" "$*" >> "$run/hooks.log"
}

# Whether process group $1 is led by the holder of this snapshot (a pid in a stale file may
# have been reused by now: never signal a group that is not ours).
is_holder() {
  [ -r "/proc/$1/cmdline" ] || return 1
  args=$(tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null) || return 1
  case $args in
    *hold-lock.sh*) ;;
    *) return 1 ;;
  esac
  printf '%s\n' "$args" | grep -qxF -- "$snapshot" && printf '%s\n' "$args" | grep -qxF -- "$run"
}

# Whether process group $pg has a process that is not a zombie (kill -0 counts zombies, and
# nobody may reap the holder's processes soon: its parent, the pre-hook, is gone).
group_alive() {
  for stat in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$stat" || continue
    # pid (command) state ppid pgrp ...: the command may hold spaces and parentheses.
    set -- ${line##*) }
    if [ "$#" -ge 3 ] && [ "$3" = "$pg" ] && [ "$1" != Z ]; then return 0; fi
  done
  return 1
}

# Ends the holder of this snapshot, if there is one: its whole process group (its shell, the
# sleep that keeps sqlite3's input open, sqlite3). The lock goes with sqlite3. Returns 1 if
# the group outlived SIGKILL.
release() {
  # A holder being started (the pre-hook stopped half way) writes its group id at once.
  if [ -e "$startfile" ] && [ ! -s "$pgidfile" ]; then
    i=0
    while [ ! -s "$pgidfile" ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
  fi
  stuck=0
  if [ -s "$pgidfile" ]; then
    pg=$(cat "$pgidfile")
    if is_holder "$pg"; then
      # Not `kill -- -PGID`: dash's kill takes no "--".
      kill -TERM "-$pg" 2>/dev/null
      i=0
      while group_alive "$pg" && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
      kill -KILL "-$pg" 2>/dev/null
      i=0
      while group_alive "$pg" && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
      if group_alive "$pg"; then stuck=1; fi
    fi
  fi
  rm -f "$pgidfile" "$outfile" "$errfile" "$startfile"
  return $stuck
}

#!/bin/sh
# The example by hand: an SQLite application under continuous writes in a protected
# directory, quiesced snapshots on a schedule, each synced to a local replica; then every
# replica snapshot is checked with PRAGMA integrity_check.
#
#   examples/sqlite/run.sh [DIR [SECONDS]]
#
# DIR (default: a new directory under /tmp) receives data/ (the protected directory, with
# the database at data/app/ledger.db), replica/, replica-mnt/, run/ (the hooks' state and
# hooks.log), app.log and policy.json (replfs.json with those paths, and a snapshot every
# 5 s). The application writes for SECONDS (default 30). Everything is unmounted and
# stopped at the end, or on Ctrl-C; DIR is left for you to look at.
#
# replfs is the `replfs` on the PATH, else this checkout's; REPLFS=/path/to/replfs overrides.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
if [ -n "${REPLFS:-}" ]; then :
elif command -v replfs >/dev/null; then REPLFS=replfs
else REPLFS="node $checkout/src/cli/replfs.mjs"
fi
replfs() { $REPLFS "$@"; }
for tool in sqlite3 setsid node; do
  command -v $tool >/dev/null || { echo "run.sh: $tool is needed (Debian: apt-get install -y sqlite3 util-linux nodejs)" >&2; exit 1; }
done

dir=${1:-$(mktemp -d /tmp/replfs-sqlite.XXXXXX)}
seconds=${2:-30}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data
replica=$dir/replica
mnt=$dir/replica-mnt
policy=$dir/policy.json
db=$data/app/ledger.db
[ ! -e "$data" ] || { echo "run.sh: $data exists already: give a new directory" >&2; exit 1; }
app=

step() { printf '\n== %s\n' "$*"; }

cleanup() {
  status=$?
  trap - EXIT INT TERM
  if [ -n "$app" ] && kill -0 "$app" 2>/dev/null; then kill -TERM "$app"; wait "$app" || true; fi
  if grep -qF " $mnt " /proc/self/mountinfo; then replfs unmount "$mnt" || replfs unmount --lazy "$mnt" || true; fi
  if grep -qF " $data " /proc/self/mountinfo; then replfs unmount "$data" || replfs unmount --lazy "$data" || true; fi
  echo
  echo "everything is in $dir (rm -rf it when done)"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "the application's database, then the directory protected"
"$here/app.sh" init "$db"
replfs init --block-size 4K "$data"

step "the policy: $policy (replfs.json with this run's paths, a snapshot every 5 s)"
node - "$here/replfs.json" "$policy" "$here/hooks" "$dir/run" "$replica" <<'JS'
const fs = require('fs');
const [from, to, hooks, run, replica] = process.argv.slice(2);
const p = JSON.parse(fs.readFileSync(from, 'utf8'));
p.snapshots.schedule = { every: '5s' };
p.quiesce.env.SQLITE_HOOKS = hooks;
p.quiesce.env.QUIESCE_RUN = run;
p.destinations.replica.url = replica;
p.destinations.replica.rpo = '1m';
fs.writeFileSync(to, JSON.stringify(p, null, 2) + '\n');
JS
replfs config "$policy" --check

step "mounted in place with that policy: a quiesced snapshot now and every 5 s, each synced"
replfs mount "$data" --config "$policy"

step "the application writes for $seconds s (log: $dir/app.log)"
# A session of its own: Ctrl-C here stops it through the cleanup, with a clean end.
setsid "$here/app.sh" run "$db" > "$dir/app.log" 2>&1 &
app=$!
sleep "$seconds"
replfs status "$data"
replfs snapshots "$data"

step "the application stops; the schedule is turned off; unmount"
kill -TERM "$app"
wait "$app" || { echo "run.sh: the application failed:" >&2; cat "$dir/app.log" >&2; exit 1; }
app=
tail -n 1 "$dir/app.log"
# The daemon rereads the file within 2 s; a quiesce under way holds the database open.
node - "$policy" <<'JS'
const fs = require('fs');
const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
p.snapshots.schedule = null;
fs.writeFileSync(process.argv[2], JSON.stringify(p, null, 2) + '\n');
JS
sleep 4
until replfs unmount "$data"; do sleep 1; done

step "what the hooks did (tail of $dir/run/hooks.log)"
tail -n 6 "$dir/run/hooks.log"

step "the replica, mounted read-only: every snapshot checked"
mkdir -p "$mnt"
replfs mount --read-only "$replica" "$mnt"
replfs snapshots "$mnt"
copy=$dir/check.db
for snap in "$mnt"/.snapshots/*/; do
  name=$(basename "$snap")
  [ "$name" != latest ] || continue
  # The database file alone: the pre-hook checkpointed the WAL with writes held.
  rm -f "$copy" "$copy-wal" "$copy-shm"
  cp "$snap/app/ledger.db" "$copy"
  check=$(sqlite3 -batch "$copy" "PRAGMA integrity_check;")
  facts=$(sqlite3 -batch -separator ' ' "$copy" "SELECT (SELECT count(*) FROM transfers), (SELECT sum(balance) FROM accounts), (SELECT count(*) FROM replfs_quiesce WHERE snapshot = '$name');")
  set -- $facts
  echo "$name: integrity_check $check; $1 transfers; balances sum to $2; quiesce mark $([ "$3" = 1 ] && echo present || echo MISSING)"
done
rm -f "$copy" "$copy-wal" "$copy-shm"
replfs unmount "$mnt"

#!/bin/sh
# replfs-sync.sh: one `replfs sync` of a protected directory to a destination, for cron.
#
#   replfs-sync.sh [options] <volume> <destination> [replfs sync options...]
#
# Logs one line per outcome, retries transient failures with backoff, runs an alert
# command on a final failure, and never runs twice at once for the same volume and
# destination. README.md in this directory documents it; the exit codes are:
#
#   0        synced (or the destination already had the newest snapshot)
#   2..11    the sync failed: replfs sync's own exit code of the last attempt
#            (transient ones, 5 busy, 9 timeout and 10 unavailable, after every retry)
#   1        replfs sync failed unexpectedly (its exit 1), or printed no summary
#   127      replfs was not found (any other code is also passed on from replfs sync)
#   64       this script was called wrongly (EX_USAGE)
#   75       another run for this volume and destination holds the lock (EX_TEMPFAIL);
#            nothing was done, no alert
#
# Options (each also an environment variable, for crontab lines):
#   --retries N      REPLFS_SYNC_RETRIES   retries after a transient failure (default 3)
#   --backoff S      REPLFS_SYNC_BACKOFF   seconds before the first retry, doubled for each
#                                          next one (default 30)
#   --max-backoff S  REPLFS_SYNC_MAX_BACKOFF  the longest wait between two tries (default 600)
#   --alert CMD      REPLFS_SYNC_ALERT     run with /bin/sh -c on a final failure; details
#                                          in REPLFS_SYNC_* variables and on its stdin
#   --lock FILE      REPLFS_SYNC_LOCK      the lock file (default: one per volume and
#                                          destination under /run/lock, or /tmp)
#   --wait S         REPLFS_SYNC_WAIT      wait up to S seconds for the lock instead of
#                                          giving up at once (default 0)
# REPLFS (default "replfs") is the replfs command and NODE (default "node") the node that
# reads its --json summary.
set -u

me=replfs-sync
retries=${REPLFS_SYNC_RETRIES:-3}
backoff=${REPLFS_SYNC_BACKOFF:-30}
max_backoff=${REPLFS_SYNC_MAX_BACKOFF:-600}
alert=${REPLFS_SYNC_ALERT:-}
lock=${REPLFS_SYNC_LOCK:-}
wait_lock=${REPLFS_SYNC_WAIT:-0}
replfs=${REPLFS:-replfs}
node=${NODE:-node}

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $me: $*"; }
warn() { log "$*" >&2; }
usage() {
  echo "$me: $*" >&2
  echo "usage: $me [--retries N] [--backoff S] [--max-backoff S] [--alert CMD] [--lock FILE] [--wait S] <volume> <destination> [replfs sync options...]" >&2
  exit 64
}
attempts() { if [ "$1" -eq 1 ]; then echo "1 attempt"; else echo "$1 attempts"; fi; }
is_count() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

while [ $# -gt 0 ]; do
  case $1 in
    --retries | --backoff | --max-backoff | --alert | --lock | --wait)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case $1 in
        --retries) retries=$2 ;;
        --backoff) backoff=$2 ;;
        --max-backoff) max_backoff=$2 ;;
        --alert) alert=$2 ;;
        --lock) lock=$2 ;;
        --wait) wait_lock=$2 ;;
      esac
      shift 2 ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) usage "unknown option $1 (options of replfs sync go after <volume> <destination>)" ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || usage "missing <volume> or <destination>"
volume=$1
destination=$2
shift 2
for a in "$@"; do
  [ "$a" != --json ] || usage "--json is added by $me itself"
done
for pair in "retries $retries" "backoff $backoff" "max-backoff $max_backoff" "wait $wait_lock"; do
  is_count "${pair#* }" || usage "--${pair%% *} must be a whole number, got \"${pair#* }\""
done

# One run at a time per volume and destination. The descriptor is not passed to replfs
# (9>&- below), so a process it leaves behind cannot keep the lock.
if [ -z "$lock" ]; then
  lockdir=/run/lock
  [ -d "$lockdir" ] && [ -w "$lockdir" ] || lockdir=${TMPDIR:-/tmp}
  lock=$lockdir/replfs-sync.$(printf '%s\n%s' "$volume" "$destination" | cksum | cut -d' ' -f1).lock
fi
exec 9>>"$lock" || { warn "cannot open the lock file $lock"; exit 64; }
if [ "$wait_lock" -gt 0 ]; then lock_how="-w $wait_lock"; else lock_how=-n; fi
# shellcheck disable=SC2086 # $lock_how is one or two words
if ! flock $lock_how 9; then
  log "$volume -> $destination: another run holds $lock; not syncing now"
  exit 75
fi

# Reads replfs sync --json on stdin; prints the summary line.
summary='
let s = "";
process.stdin.on("data", (d) => { s += d; });
process.stdin.on("end", () => {
  const j = JSON.parse(s);
  const size = (n) => {
    if (n < 1024) return `${n} bytes`;
    const [unit, d] = n < 1048576 ? ["KiB", 1024] : n < 1073741824 ? ["MiB", 1048576] : ["GiB", 1073741824];
    return `${n} bytes (${(n / d).toFixed(1)} ${unit})`;
  };
  if (j.replicaSnapshot === null) {
    console.log(`snapshot ${j.snapshot} (source time ${j.sourceTime}): already on the destination, nothing sent`);
  } else {
    const how = j.kind === "full" ? "full copy" : j.kind === "complete" ? "every file compared" : `since ${j.base}`;
    console.log(`snapshot ${j.snapshot} (source time ${j.sourceTime}, ${how}${j.resumed ? ", resumed" : ""}): `
      + `${j.filesChanged} files, ${size(j.bytesSent)} sent, ${size(j.bytesOnWire)} on the wire, `
      + `${(j.durationMs / 1000).toFixed(1)} s`);
  }
});'

exit_name() {
  case $1 in
    1) echo internal ;; 2) echo usage ;; 3) echo notFound ;; 4) echo refused ;; 5) echo busy ;;
    6) echo damaged ;; 7) echo fuseUnavailable ;; 8) echo permission ;; 9) echo timeout ;;
    10) echo unavailable ;; 11) echo different ;; *) echo "exit$1" ;;
  esac
}

out=$(mktemp) && err=$(mktemp) || { warn "cannot make temporary files"; exit 1; }
trap 'rm -f "$out" "$err"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

attempt=1
tries=$((retries + 1))
delay=$backoff
while :; do
  "$replfs" sync "$volume" "$destination" "$@" --json >"$out" 2>"$err" 9>&-
  code=$?
  if [ $code -eq 0 ]; then
    if line=$("$node" -e "$summary" <"$out" 2>>"$err" 9>&-); then
      log "$volume -> $destination: $line"
      exit 0
    fi
    code=1
    message="replfs sync succeeded but its summary could not be read: $(head -c 300 "$out")"
  else
    message=$(grep -v '^  hint: ' "$err" | head -n 1)
    [ -n "$message" ] || message="replfs sync exited with $code and said nothing"
  fi
  name=$(exit_name $code)
  case $code in
    5 | 9 | 10) transient=yes ;;
    *) transient=no ;;
  esac
  if [ $transient = yes ] && [ $attempt -lt $tries ]; then
    warn "$volume -> $destination: attempt $attempt of $tries failed (exit $code $name, transient): $message; retrying in ${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2))
    [ $delay -le "$max_backoff" ] || delay=$max_backoff
    continue
  fi
  break
done

case $code in
  4) advice="a replica changed outside replfs is refused until checked: replfs verify $volume $destination, then replfs sync --force $volume $destination" ;;
  8) advice="check the token file (--token-file) and the permissions on both sides" ;;
  2) advice="check the options passed to replfs sync" ;;
  3) advice="check that $volume is a protected directory and that the destination's parent exists" ;;
  5 | 9 | 10) advice="still failing after $(attempts $attempt); the next run will try again (an interrupted sync resumes)" ;;
  *) advice="see the message" ;;
esac
if [ $transient = yes ]; then kind="transient, gave up after $(attempts $attempt)"; else kind=permanent; fi
warn "$volume -> $destination: failed (exit $code $name, $kind): $message"
warn "$volume -> $destination: $advice"

if [ -n "$alert" ]; then
  REPLFS_SYNC_VOLUME=$volume REPLFS_SYNC_DESTINATION=$destination REPLFS_SYNC_EXIT=$code \
  REPLFS_SYNC_EXIT_NAME=$name REPLFS_SYNC_TRANSIENT=$transient REPLFS_SYNC_ATTEMPTS=$attempt \
  REPLFS_SYNC_MESSAGE=$message REPLFS_SYNC_ADVICE=$advice \
    /bin/sh -c "$alert" <"$err" 9>&-
  alert_code=$?
  [ $alert_code -eq 0 ] || warn "the alert command exited with $alert_code"
fi
exit $code

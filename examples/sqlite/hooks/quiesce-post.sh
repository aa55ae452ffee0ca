#!/bin/sh
# The post-hook of examples/sqlite: lets the application go on. It ends the lock holder the
# pre-hook started for this snapshot, whatever became of the pre-hook (succeeded, failed,
# stopped half way, or never started one): replfs always runs the post-hook once the
# quiesce has begun. Settings: see common.sh.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

if release; then
  log "released (pre-hook: ${REPLFS_PRE_STATUS:-unknown})"
else
  log "failed: the lock holder outlived SIGKILL (pre-hook: ${REPLFS_PRE_STATUS:-unknown})"
  echo "quiesce-post: the lock holder outlived SIGKILL" >&2
  exit 1
fi

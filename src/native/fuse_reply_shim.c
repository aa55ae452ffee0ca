/*
 * Attribute caching that stays right for hard links, on libfuse 2's high-level API.
 *
 * replfs wants the kernel to cache attributes: it is the only writer, and without caching
 * every path component costs a GETATTR on each syscall. libfuse's high-level API gives
 * each name its own kernel inode (node id), so a file with several hard links is several
 * kernel inodes sharing one set of attributes, and a change through one name leaves the
 * others stale. Two rules keep the cache right:
 *
 *  1. Replies for non-directories with nlink > 1 carry an attribute time of 0: such files
 *     are never cached.
 *  2. A file cached while it had one link (nlink == 1) may gain a second through link(2);
 *     the kernel then refreshes only the new name. So we remember, per inode number, the
 *     node id of the last single-link reply, and when a reply shows that inode with
 *     nlink > 1 under another node id, we tell the kernel to drop the remembered node's
 *     attributes (FUSE_NOTIFY_INVAL_INODE, attributes only).
 *
 * Entries older than the cache horizon are forgotten: the kernel's copy has expired too. A
 * GETATTR reply for a single-link file we hold no node id for is sent uncached, since we
 * could not invalidate it if it gained a link later.
 *
 * The same interposition lets the daemon drop names of `.snapshots` from the kernel's
 * cache when snapshots are taken or deleted (see "watched directories" below).
 *
 * How: this addon is loaded with RTLD_GLOBAL before fuse-native, so these definitions come
 * first in the global symbol scope, and libfuse's own calls to fuse_reply_entry,
 * fuse_reply_create and fuse_reply_attr, and fuse-native's to fuse_destroy (through their
 * PLTs) land here. The originals are found with dlsym on libfuse's handle.
 * `fuse_reply_shim_stats` lets the daemon check that the interposition is in effect before
 * relying on it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

typedef struct fuse_req *fuse_req_t;
typedef unsigned long fuse_ino_t;
struct fuse;
struct fuse_session;
struct fuse_chan;
struct fuse_file_info;

/* Layout from fuse_lowlevel.h (libfuse 2.9). */
struct fuse_entry_param {
  fuse_ino_t ino;
  unsigned long generation;
  struct stat attr;
  double attr_timeout;
  double entry_timeout;
};

static atomic_ulong shim_calls;
static atomic_ulong shim_uncached;
static atomic_ulong shim_invalidated;

/* ---- libfuse entry points, looked up once ---- */

static void *libfuse(void) {
  static void *lib;
  if (!lib) lib = dlopen("libfuse.so.2", RTLD_LAZY | RTLD_NOLOAD);
  return lib;
}

static void *real_symbol(const char *name) {
  void *lib = libfuse();
  return lib ? dlsym(lib, name) : NULL;
}

/* ---- inode number -> node id of its last single-link reply ---- */

struct slot {
  uint64_t ino;     /* 0 = empty */
  uint64_t nodeid;
  int64_t seen;     /* monotonic seconds */
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot *table;
static size_t table_cap;
static size_t table_used;
static int64_t horizon_s = 2;

static int64_t now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t) ts.tv_sec;
}

static size_t slot_of(uint64_t ino, size_t cap) {
  uint64_t h = ino * 0x9E3779B97F4A7C15ull;
  return (size_t) (h >> 17) & (cap - 1);
}

/* Linear probing; the caller guarantees a free slot. */
static void raw_insert(struct slot *tbl, size_t cap, struct slot s) {
  size_t i = slot_of(s.ino, cap);
  while (tbl[i].ino != 0 && tbl[i].ino != s.ino) i = (i + 1) & (cap - 1);
  tbl[i] = s;
}

static size_t find_locked(uint64_t ino) {
  size_t i = slot_of(ino, table_cap);
  while (table[i].ino != 0 && table[i].ino != ino) i = (i + 1) & (table_cap - 1);
  return i;
}

/* Moves every live entry into a table of `cap` slots, dropping what has expired. */
static void rebuild_locked(size_t cap) {
  struct slot *fresh = calloc(cap, sizeof(struct slot));
  if (!fresh) return;
  size_t used = 0;
  int64_t now = now_s();
  for (size_t i = 0; i < table_cap; i++) {
    if (table[i].ino == 0 || now - table[i].seen > horizon_s) continue;
    raw_insert(fresh, cap, table[i]);
    used++;
  }
  free(table);
  table = fresh;
  table_cap = cap;
  table_used = used;
}

static void table_put_locked(uint64_t ino, uint64_t nodeid) {
  if (table_cap == 0) rebuild_locked(4096);
  else if ((table_used + 1) * 4 > table_cap * 3) {
    /* Three quarters full: drop what expired, and grow if it is still over half full. */
    rebuild_locked(table_cap);
    if ((table_used + 1) * 2 > table_cap) rebuild_locked(table_cap * 2);
  }
  if (table_cap == 0 || (table_used + 1) * 8 > table_cap * 7) return; /* out of memory: cache less */
  size_t i = find_locked(ino);
  if (table[i].ino == 0) table_used++;
  table[i] = (struct slot){ .ino = ino, .nodeid = nodeid, .seen = now_s() };
}

/* Removes `ino` and returns its node id if the kernel may still cache it, else 0. */
static uint64_t table_take_locked(uint64_t ino) {
  if (table_cap == 0) return 0;
  size_t i = find_locked(ino);
  if (table[i].ino == 0) return 0;
  uint64_t nodeid = now_s() - table[i].seen <= horizon_s ? table[i].nodeid : 0;
  table[i].ino = 0;
  table_used--;
  /* Re-place the rest of the probe cluster so that later lookups still find it. */
  for (size_t j = (i + 1) & (table_cap - 1); table[j].ino != 0; j = (j + 1) & (table_cap - 1)) {
    struct slot s = table[j];
    table[j].ino = 0;
    raw_insert(table, table_cap, s);
  }
  return nodeid;
}

/* Marks `ino` as seen again; false if it is not remembered. */
static bool touch_locked(uint64_t ino) {
  if (table_cap == 0) return false;
  size_t i = find_locked(ino);
  if (table[i].ino != ino) return false;
  table[i].seen = now_s();
  return true;
}

/* ---- libfuse's notification calls ---- */

static void *(*req_userdata)(fuse_req_t);
static struct fuse_session *(*get_session)(struct fuse *);
static struct fuse_chan *(*next_chan)(struct fuse_session *, struct fuse_chan *);
static int (*notify_inval_inode)(struct fuse_chan *, fuse_ino_t, off_t, off_t);
static int (*notify_inval_entry)(struct fuse_chan *, fuse_ino_t, const char *, size_t);
static pthread_once_t notify_once = PTHREAD_ONCE_INIT;

static void find_notify_calls(void) {
  req_userdata = (void *(*)(fuse_req_t)) real_symbol("fuse_req_userdata");
  get_session = (struct fuse_session *(*)(struct fuse *)) real_symbol("fuse_get_session");
  next_chan = (struct fuse_chan *(*)(struct fuse_session *, struct fuse_chan *)) real_symbol("fuse_session_next_chan");
  notify_inval_inode = (int (*)(struct fuse_chan *, fuse_ino_t, off_t, off_t)) real_symbol("fuse_lowlevel_notify_inval_inode");
  notify_inval_entry = (int (*)(struct fuse_chan *, fuse_ino_t, const char *, size_t)) real_symbol("fuse_lowlevel_notify_inval_entry");
}

static bool notify_ready(void) {
  pthread_once(&notify_once, find_notify_calls);
  return req_userdata && get_session && next_chan && notify_inval_inode && notify_inval_entry;
}

/* High-level libfuse passes its struct fuse as the low-level user data. */
static struct fuse *fuse_of(fuse_req_t req) {
  return notify_ready() ? (struct fuse *) req_userdata(req) : NULL;
}

static struct fuse_chan *chan_of(struct fuse *f) {
  struct fuse_session *se = f ? get_session(f) : NULL;
  return se ? next_chan(se, NULL) : NULL;
}

static void invalidate_attrs(fuse_req_t req, uint64_t nodeid) {
  struct fuse_chan *ch = chan_of(fuse_of(req));
  /* A negative offset invalidates the attributes only, never the page cache. */
  if (ch && notify_inval_inode(ch, (fuse_ino_t) nodeid, -1, 0) == 0) atomic_fetch_add(&shim_invalidated, 1);
}

/*
 * ---- watched directories: entries that change behind the kernel's back ----
 *
 * A mount's `.snapshots` gains and loses names when snapshots are taken and deleted, not
 * through any operation the kernel sees, so its cached entries (and a cached "no such
 * name") would outlive the change by entry_timeout. The daemon names such a directory by
 * its inode number; replies that enter it record its node id and mount, and the daemon
 * then asks for single names to be dropped.
 */

#define MAX_WATCHED 64

struct watched {
  uint64_t ino;     /* 0 = free */
  uint64_t nodeid;  /* 0 = not looked up yet */
  struct fuse *fuse;
};

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct watched watched[MAX_WATCHED];
static atomic_int watched_count;
/* Held for reading while a notification is written, for writing while a mount is destroyed. */
static pthread_rwlock_t notify_lock = PTHREAD_RWLOCK_INITIALIZER;

static void remember_watched(fuse_req_t req, uint64_t nodeid, const struct stat *st) {
  if (atomic_load(&watched_count) == 0 || !S_ISDIR(st->st_mode)) return;
  pthread_mutex_lock(&watch_lock);
  for (size_t i = 0; i < MAX_WATCHED; i++) {
    if (watched[i].ino != (uint64_t) st->st_ino) continue;
    struct fuse *f = fuse_of(req);
    if (f) {
      watched[i].nodeid = nodeid;
      watched[i].fuse = f;
    }
    break;
  }
  pthread_mutex_unlock(&watch_lock);
}

/* Starts (on != 0) or stops watching the directory with inode number `ino`. 0, or -ENOSPC. */
int fuse_reply_shim_watch(uint64_t ino, int on) {
  int rc = on ? -ENOSPC : 0;
  pthread_mutex_lock(&watch_lock);
  for (size_t i = 0; i < MAX_WATCHED; i++) {
    if (watched[i].ino == ino && ino != 0) {
      if (!on) {
        watched[i] = (struct watched){ 0 };
        atomic_fetch_sub(&watched_count, 1);
      }
      rc = 0;
      break;
    }
  }
  if (on && rc != 0) {
    for (size_t i = 0; i < MAX_WATCHED; i++) {
      if (watched[i].ino != 0) continue;
      watched[i] = (struct watched){ .ino = ino };
      atomic_fetch_add(&watched_count, 1);
      rc = 0;
      break;
    }
  }
  pthread_mutex_unlock(&watch_lock);
  return rc;
}

/*
 * Tells the kernel to drop the entry `name` in the watched directory `ino`, or the
 * directory's own attributes when `name` is NULL. Returns 0 when the kernel took it,
 * 1 when there was nothing to drop (the directory was never looked up, or the kernel
 * has no such entry), or a negative errno. May block until the kernel can lock the
 * directory, that is until lookups in it have been answered: never call it from the
 * thread that answers them.
 */
int fuse_reply_shim_invalidate(uint64_t ino, const char *name) {
  uint64_t nodeid = 0;
  struct fuse *f = NULL;
  pthread_mutex_lock(&watch_lock);
  for (size_t i = 0; i < MAX_WATCHED; i++) {
    if (watched[i].ino == ino && ino != 0) {
      nodeid = watched[i].nodeid;
      f = watched[i].fuse;
      break;
    }
  }
  pthread_mutex_unlock(&watch_lock);
  if (nodeid == 0 || !notify_ready()) return 1;
  pthread_rwlock_rdlock(&notify_lock);
  /* The mount may have been destroyed since the table was read: look again under the lock. */
  bool alive = false;
  pthread_mutex_lock(&watch_lock);
  for (size_t i = 0; i < MAX_WATCHED; i++) alive = alive || (watched[i].ino == ino && watched[i].fuse == f);
  pthread_mutex_unlock(&watch_lock);
  struct fuse_chan *ch = alive ? chan_of(f) : NULL;
  int rc = 1;
  if (ch) rc = name ? notify_inval_entry(ch, (fuse_ino_t) nodeid, name, strlen(name))
                    : notify_inval_inode(ch, (fuse_ino_t) nodeid, -1, 0);
  pthread_rwlock_unlock(&notify_lock);
  if (rc == -ENOENT) return 1;
  return rc;
}

/*
 * fuse-native destroys its struct fuse when the mount ends; notifications must not use it
 * after that. Interposed like the replies above; waits for a notification being written
 * (the kernel fails those quickly once the connection is gone).
 */
void fuse_destroy(struct fuse *f) {
  static void (*real)(struct fuse *);
  if (!real) real = (void (*)(struct fuse *)) real_symbol("fuse_destroy");
  pthread_rwlock_wrlock(&notify_lock);
  pthread_mutex_lock(&watch_lock);
  for (size_t i = 0; i < MAX_WATCHED; i++) {
    if (watched[i].fuse != f) continue;
    watched[i].fuse = NULL;
    watched[i].nodeid = 0;
  }
  pthread_mutex_unlock(&watch_lock);
  pthread_rwlock_unlock(&notify_lock);
  if (real) real(f);
}

/*
 * Applies both rules to one reply. `nodeid` is 0 when the reply does not name its node
 * (GETATTR): such a reply only refreshes the memory of a single-link file.
 */
static double decide(fuse_req_t req, uint64_t nodeid, const struct stat *st, double attr_timeout) {
  atomic_fetch_add(&shim_calls, 1);
  if (st == NULL || S_ISDIR(st->st_mode) || attr_timeout == 0) return attr_timeout;
  uint64_t ino = (uint64_t) st->st_ino;
  if (st->st_nlink <= 1) {
    pthread_mutex_lock(&table_lock);
    bool known = true;
    if (nodeid != 0) table_put_locked(ino, nodeid);
    else known = touch_locked(ino);
    pthread_mutex_unlock(&table_lock);
    if (known) return attr_timeout;
    /* A GETATTR for a node we cannot name (it lost its entry when it had several links,
       or the table was full): if it gained a link later we could not invalidate it. */
    atomic_fetch_add(&shim_uncached, 1);
    return 0;
  }
  pthread_mutex_lock(&table_lock);
  uint64_t stale = table_take_locked(ino);
  pthread_mutex_unlock(&table_lock);
  if (stale != 0 && stale != nodeid) invalidate_attrs(req, stale);
  atomic_fetch_add(&shim_uncached, 1);
  return 0;
}

int fuse_reply_entry(fuse_req_t req, const struct fuse_entry_param *e) {
  static int (*real)(fuse_req_t, const struct fuse_entry_param *);
  if (!real) real = (int (*)(fuse_req_t, const struct fuse_entry_param *)) real_symbol("fuse_reply_entry");
  if (e == NULL || e->ino == 0) return real(req, e);
  remember_watched(req, e->ino, &e->attr);
  struct fuse_entry_param copy = *e;
  copy.attr_timeout = decide(req, e->ino, &e->attr, e->attr_timeout);
  return real(req, &copy);
}

int fuse_reply_create(fuse_req_t req, const struct fuse_entry_param *e, const struct fuse_file_info *fi) {
  static int (*real)(fuse_req_t, const struct fuse_entry_param *, const struct fuse_file_info *);
  if (!real) real = (int (*)(fuse_req_t, const struct fuse_entry_param *, const struct fuse_file_info *)) real_symbol("fuse_reply_create");
  if (e == NULL) return real(req, e, fi);
  struct fuse_entry_param copy = *e;
  copy.attr_timeout = decide(req, e->ino, &e->attr, e->attr_timeout);
  return real(req, &copy, fi);
}

int fuse_reply_attr(fuse_req_t req, const struct stat *attr, double attr_timeout) {
  static int (*real)(fuse_req_t, const struct stat *, double);
  if (!real) real = (int (*)(fuse_req_t, const struct stat *, double)) real_symbol("fuse_reply_attr");
  return real(req, attr, decide(req, 0, attr, attr_timeout));
}

void fuse_reply_shim_configure(double attr_timeout_s) {
  pthread_mutex_lock(&table_lock);
  horizon_s = (int64_t) attr_timeout_s + 2;
  pthread_mutex_unlock(&table_lock);
}

void fuse_reply_shim_stats(uint64_t *calls, uint64_t *uncached, uint64_t *invalidated) {
  *calls = atomic_load(&shim_calls);
  *uncached = atomic_load(&shim_uncached);
  *invalidated = atomic_load(&shim_invalidated);
}

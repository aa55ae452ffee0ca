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
 * Entries older than the cache horizon are forgotten: the kernel's copy has expired too.
 *
 * How: this addon is loaded with RTLD_GLOBAL before fuse-native, so these definitions come
 * first in the global symbol scope, and libfuse's own calls to fuse_reply_entry,
 * fuse_reply_create and fuse_reply_attr (through its PLT) land here. The originals are
 * found with dlsym on libfuse's handle. `fuse_reply_shim_stats` lets the daemon check that
 * the interposition is in effect before relying on it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
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

static void touch_locked(uint64_t ino) {
  if (table_cap == 0) return;
  size_t i = find_locked(ino);
  if (table[i].ino == ino) table[i].seen = now_s();
}

static void invalidate_attrs(fuse_req_t req, uint64_t nodeid) {
  static void *(*req_userdata)(fuse_req_t);
  static struct fuse_session *(*get_session)(struct fuse *);
  static struct fuse_chan *(*next_chan)(struct fuse_session *, struct fuse_chan *);
  static int (*notify_inval_inode)(struct fuse_chan *, fuse_ino_t, off_t, off_t);
  if (!notify_inval_inode) {
    req_userdata = (void *(*)(fuse_req_t)) real_symbol("fuse_req_userdata");
    get_session = (struct fuse_session *(*)(struct fuse *)) real_symbol("fuse_get_session");
    next_chan = (struct fuse_chan *(*)(struct fuse_session *, struct fuse_chan *)) real_symbol("fuse_session_next_chan");
    notify_inval_inode = (int (*)(struct fuse_chan *, fuse_ino_t, off_t, off_t)) real_symbol("fuse_lowlevel_notify_inval_inode");
  }
  if (!req_userdata || !get_session || !next_chan || !notify_inval_inode) return;
  /* High-level libfuse passes its struct fuse as the low-level user data. */
  struct fuse_session *se = get_session((struct fuse *) req_userdata(req));
  struct fuse_chan *ch = se ? next_chan(se, NULL) : NULL;
  /* A negative offset invalidates the attributes only, never the page cache. */
  if (ch && notify_inval_inode(ch, (fuse_ino_t) nodeid, -1, 0) == 0) atomic_fetch_add(&shim_invalidated, 1);
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
    if (nodeid != 0) table_put_locked(ino, nodeid);
    else touch_locked(ino);
    pthread_mutex_unlock(&table_lock);
    return attr_timeout;
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

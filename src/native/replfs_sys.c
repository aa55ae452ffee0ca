/*
 * replfs_sys: the few syscalls Node's fs module does not expose (extended
 * attributes, mknod, nanosecond utimensat/futimens, readdir with d_ino, and
 * readdir with an lstat of every entry in one call, of one directory or several).
 *
 * Every function validates its arguments on the JS thread, runs the syscall on
 * the libuv thread pool through napi_async_work and settles a Promise. Errors
 * reject with an Error shaped like Node's fs errors:
 *   code: errno name ('ENOENT'), errno: negative errno, syscall, path.
 * readdirStatSync is the one synchronous exception: it runs on the calling
 * thread and throws the same errors. readdirStatMany resolves with one result
 * per directory, an Error of that shape for each one that failed.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8

#include <node_api.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* errno names                                                              */

typedef struct {
  int num;
  const char *name;
} errno_name_t;

#define E_(x) { x, #x },
static const errno_name_t errno_names[] = {
  E_(EPERM) E_(ENOENT) E_(ESRCH) E_(EINTR) E_(EIO) E_(ENXIO) E_(E2BIG)
  E_(ENOEXEC) E_(EBADF) E_(ECHILD) E_(EAGAIN) E_(ENOMEM) E_(EACCES)
  E_(EFAULT) E_(ENOTBLK) E_(EBUSY) E_(EEXIST) E_(EXDEV) E_(ENODEV)
  E_(ENOTDIR) E_(EISDIR) E_(EINVAL) E_(ENFILE) E_(EMFILE) E_(ENOTTY)
  E_(ETXTBSY) E_(EFBIG) E_(ENOSPC) E_(ESPIPE) E_(EROFS) E_(EMLINK)
  E_(EPIPE) E_(EDOM) E_(ERANGE) E_(EDEADLK) E_(ENAMETOOLONG) E_(ENOLCK)
  E_(ENOSYS) E_(ENOTEMPTY) E_(ELOOP) E_(ENOMSG) E_(EIDRM)
#ifdef ENODATA
  E_(ENODATA)
#endif
#ifdef ENOSTR
  E_(ENOSTR)
#endif
#ifdef ETIME
  E_(ETIME)
#endif
#ifdef ENOSR
  E_(ENOSR)
#endif
#ifdef ENOLINK
  E_(ENOLINK)
#endif
  E_(EPROTO)
#ifdef EMULTIHOP
  E_(EMULTIHOP)
#endif
  E_(EBADMSG) E_(EOVERFLOW)
#ifdef EBADFD
  E_(EBADFD)
#endif
  E_(EILSEQ)
#ifdef EUSERS
  E_(EUSERS)
#endif
  E_(ENOTSOCK) E_(EDESTADDRREQ) E_(EMSGSIZE) E_(EPROTOTYPE)
  E_(ENOPROTOOPT) E_(EPROTONOSUPPORT)
  E_(EOPNOTSUPP) /* == ENOTSUP on Linux; the name ENOTSUP is returned below */
  E_(EAFNOSUPPORT) E_(EADDRINUSE) E_(EADDRNOTAVAIL) E_(ENETDOWN)
  E_(ENETUNREACH) E_(ENETRESET) E_(ECONNABORTED) E_(ECONNRESET)
  E_(ENOBUFS) E_(EISCONN) E_(ENOTCONN) E_(ETIMEDOUT) E_(ECONNREFUSED)
  E_(EHOSTUNREACH) E_(EALREADY) E_(EINPROGRESS) E_(ESTALE) E_(EDQUOT)
  E_(ECANCELED)
#ifdef EUCLEAN
  E_(EUCLEAN)
#endif
#ifdef EREMOTEIO
  E_(EREMOTEIO)
#endif
#ifdef ENOMEDIUM
  E_(ENOMEDIUM)
#endif
#ifdef EMEDIUMTYPE
  E_(EMEDIUMTYPE)
#endif
#ifdef EOWNERDEAD
  E_(EOWNERDEAD)
#endif
#ifdef ENOTRECOVERABLE
  E_(ENOTRECOVERABLE)
#endif
#ifdef ENOKEY
  E_(ENOKEY)
#endif
#ifdef EKEYEXPIRED
  E_(EKEYEXPIRED)
#endif
#ifdef EKEYREVOKED
  E_(EKEYREVOKED)
#endif
#ifdef EKEYREJECTED
  E_(EKEYREJECTED)
#endif
#ifdef ERFKILL
  E_(ERFKILL)
#endif
#ifdef EHWPOISON
  E_(EHWPOISON)
#endif
};
#undef E_

/* Writes the errno's name into buf (size >= 16). */
static void errno_name(int err, char *buf, size_t size) {
  /* Linux defines ENOTSUP as EOPNOTSUPP; xattr callers expect 'ENOTSUP'. */
#if defined(ENOTSUP)
  if (err == ENOTSUP) {
    snprintf(buf, size, "ENOTSUP");
    return;
  }
#endif
  for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
    if (errno_names[i].num == err) {
      snprintf(buf, size, "%s", errno_names[i].name);
      return;
    }
  }
  snprintf(buf, size, "E%d", err);
}

/* ------------------------------------------------------------------------ */
/* Request state                                                             */

typedef enum {
  OP_LGETXATTR,
  OP_LSETXATTR,
  OP_LLISTXATTR,
  OP_LREMOVEXATTR,
  OP_MKNOD,
  OP_UTIMENSAT,
  OP_FUTIMENS,
  OP_READDIR,
  OP_PUNCH,
  OP_INVALIDATE,
  OP_SYNCFS,
  OP_READDIR_STAT,
  OP_READDIR_STAT_MANY
} op_t;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  op_t op;
  const char *syscall;

  char *path;
  char *name;

  /* lsetxattr input; lgetxattr / llistxattr output */
  char *value;
  size_t value_len;

  int flags;
  mode_t mode;
  dev_t dev;
  int fd;
  int nofollow;
  /* getxattr / listxattr: follow a final symlink (used on /proc/self/fd/N) */
  int follow;
  int64_t offset;
  int64_t length;
  struct timespec ts[2];

  /* readdir output */
  char **names;
  uint64_t *inos;
  unsigned char *types;
  size_t count;
  size_t cap;

  /* readdirStat output: names packed NUL-terminated into one buffer, with the
     offset of each; RS_FIELDS doubles per entry. */
  char *nbuf;
  size_t nbuf_len;
  size_t nbuf_cap;
  size_t *noff;
  double *rows;

  /* readdirStatMany: the directories, and where each one's entries start, how many
     there are, and the errno that stopped it (0 if none). */
  char **paths;
  size_t npaths;
  size_t *dir_first;
  size_t *dir_count;
  int *dir_err;

  int err; /* positive errno, 0 on success */
} req_t;

static void req_free(req_t *r) {
  if (r == NULL) return;
  free(r->path);
  free(r->name);
  free(r->value);
  if (r->names != NULL) {
    for (size_t i = 0; i < r->count; i++) free(r->names[i]);
    free(r->names);
  }
  free(r->inos);
  free(r->types);
  free(r->nbuf);
  free(r->noff);
  free(r->rows);
  if (r->paths != NULL) {
    for (size_t i = 0; i < r->npaths; i++) free(r->paths[i]);
    free(r->paths);
  }
  free(r->dir_first);
  free(r->dir_count);
  free(r->dir_err);
  free(r);
}

/* ------------------------------------------------------------------------ */
/* Worker-thread side                                                        */

#define MAX_SIZE_RETRIES 16

/* Size query then read, retrying while the value grows in between. */
static void do_getxattr(req_t *r) {
  for (int attempt = 0; attempt < MAX_SIZE_RETRIES; attempt++) {
    ssize_t size = r->follow ? getxattr(r->path, r->name, NULL, 0) : lgetxattr(r->path, r->name, NULL, 0);
    if (size < 0) {
      r->err = errno;
      return;
    }
    free(r->value);
    r->value = malloc(size > 0 ? (size_t) size : 1);
    if (r->value == NULL) {
      r->err = ENOMEM;
      return;
    }
    if (size == 0) {
      r->value_len = 0;
      return;
    }
    ssize_t n = r->follow ? getxattr(r->path, r->name, r->value, (size_t) size) : lgetxattr(r->path, r->name, r->value, (size_t) size);
    if (n >= 0) {
      r->value_len = (size_t) n;
      return;
    }
    if (errno != ERANGE) {
      r->err = errno;
      return;
    }
  }
  r->err = ERANGE;
}

static void do_listxattr(req_t *r) {
  for (int attempt = 0; attempt < MAX_SIZE_RETRIES; attempt++) {
    ssize_t size = r->follow ? listxattr(r->path, NULL, 0) : llistxattr(r->path, NULL, 0);
    if (size < 0) {
      r->err = errno;
      return;
    }
    free(r->value);
    r->value = malloc(size > 0 ? (size_t) size : 1);
    if (r->value == NULL) {
      r->err = ENOMEM;
      return;
    }
    if (size == 0) {
      r->value_len = 0;
      return;
    }
    ssize_t n = r->follow ? listxattr(r->path, r->value, (size_t) size) : llistxattr(r->path, r->value, (size_t) size);
    if (n >= 0) {
      r->value_len = (size_t) n;
      return;
    }
    if (errno != ERANGE) {
      r->err = errno;
      return;
    }
  }
  r->err = ERANGE;
}

static int readdir_push(req_t *r, const char *name, uint64_t ino, unsigned char type) {
  if (r->count == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 64;
    char **names = realloc(r->names, cap * sizeof(char *));
    if (names == NULL) return ENOMEM;
    r->names = names;
    uint64_t *inos = realloc(r->inos, cap * sizeof(uint64_t));
    if (inos == NULL) return ENOMEM;
    r->inos = inos;
    unsigned char *types = realloc(r->types, cap);
    if (types == NULL) return ENOMEM;
    r->types = types;
    r->cap = cap;
  }
  char *copy = strdup(name);
  if (copy == NULL) return ENOMEM;
  r->names[r->count] = copy;
  r->inos[r->count] = ino;
  r->types[r->count] = type;
  r->count++;
  return 0;
}

static void do_readdir(req_t *r) {
  DIR *dir = opendir(r->path);
  if (dir == NULL) {
    r->err = errno;
    return;
  }
  for (;;) {
    errno = 0;
    struct dirent *ent = readdir(dir);
    if (ent == NULL) {
      if (errno != 0) r->err = errno;
      break;
    }
    const char *n = ent->d_name;
    if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
    int err = readdir_push(r, n, (uint64_t) ent->d_ino, ent->d_type);
    if (err != 0) {
      r->err = err;
      break;
    }
  }
  closedir(dir);
}

/*
 * readdirStat: the entries of a directory with the numbers of an lstat of each, taken
 * with statx(dirfd, name, AT_SYMLINK_NOFOLLOW) relative to the open directory. The
 * numbers are those Node's fs.lstat(path, { bigint: true }) gives, converted to doubles
 * the way Number(bigint) converts Node's (signed 64-bit) values:
 *   - statx with the mask libuv asks for (basic stats and birth time), raw birth time
 *     (zero where the filesystem keeps none);
 *   - where statx is unavailable (old kernel, seccomp), fstatat with the birth time set
 *     to the change time, as libuv does then.
 * An entry that is gone by the time it is looked at is left out, as if the directory
 * had been read a moment later. An entry whose name is not valid UTF-8 keeps its place
 * with its name converted as readdirIno converts it (invalid bytes become U+FFFD) and
 * RS_ERRNO set to EILSEQ: that name does not reach the entry, so its numbers are not
 * given. Any other failure to look at an entry keeps the entry with RS_ERRNO set.
 */
enum {
  RS_INO,
  RS_MODE,
  RS_NLINK,
  RS_SIZE,
  RS_MTIME_SEC,
  RS_MTIME_NSEC,
  RS_CTIME_SEC,
  RS_CTIME_NSEC,
  RS_BTIME_SEC,
  RS_BTIME_NSEC,
  RS_DEV_HI,
  RS_DEV_LO,
  RS_RDEV,
  RS_ERRNO,
  RS_FIELDS
};

/* As Number(x) of the signed 64-bit value Node keeps in its BigInt stats array. */
#define RS_NUM(x) ((double) (int64_t) (x))

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF): what V8
   decodes without replacement characters. */
static int utf8_valid(const unsigned char *s) {
  while (*s) {
    unsigned char c = *s;
    if (c < 0x80) {
      s++;
      continue;
    }
    int n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
    else return 0;
    for (int i = 1; i <= n; i++) {
      if ((s[i] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    s += n + 1;
  }
  return 1;
}

#ifdef SYS_statx
/* Set once statx turns out to be unusable (as libuv does): later calls go to fstatat. */
static atomic_int no_statx;
#endif

/* Fills row with the lstat numbers of dirfd/name; returns 0 or an errno. */
static int stat_row(int dirfd, const char *name, double *row) {
  uint64_t dev;
#ifdef SYS_statx
  if (!atomic_load_explicit(&no_statx, memory_order_relaxed)) {
    struct statx sx;
    /* 0xFFF: STATX_BASIC_STATS | STATX_BTIME, the mask libuv uses. */
    long rc = syscall(SYS_statx, dirfd, name, AT_SYMLINK_NOFOLLOW, 0xFFFU, &sx);
    if (rc == 0) {
      dev = (uint64_t) makedev(sx.stx_dev_major, sx.stx_dev_minor);
      row[RS_INO] = RS_NUM(sx.stx_ino);
      row[RS_MODE] = (double) sx.stx_mode;
      row[RS_NLINK] = (double) sx.stx_nlink;
      row[RS_SIZE] = RS_NUM(sx.stx_size);
      row[RS_MTIME_SEC] = (double) sx.stx_mtime.tv_sec;
      row[RS_MTIME_NSEC] = (double) sx.stx_mtime.tv_nsec;
      row[RS_CTIME_SEC] = (double) sx.stx_ctime.tv_sec;
      row[RS_CTIME_NSEC] = (double) sx.stx_ctime.tv_nsec;
      row[RS_BTIME_SEC] = (double) sx.stx_btime.tv_sec;
      row[RS_BTIME_NSEC] = (double) sx.stx_btime.tv_nsec;
      row[RS_DEV_HI] = (double) (uint32_t) (dev >> 32);
      row[RS_DEV_LO] = (double) (uint32_t) dev;
      row[RS_RDEV] = RS_NUM(makedev(sx.stx_rdev_major, sx.stx_rdev_minor));
      row[RS_ERRNO] = 0;
      return 0;
    }
    if (rc != -1 || (errno != EINVAL && errno != EPERM && errno != ENOSYS && errno != EOPNOTSUPP)) {
      return rc == -1 ? errno : EIO;
    }
    atomic_store_explicit(&no_statx, 1, memory_order_relaxed);
  }
#endif
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  dev = (uint64_t) st.st_dev;
  row[RS_INO] = RS_NUM(st.st_ino);
  row[RS_MODE] = (double) st.st_mode;
  row[RS_NLINK] = RS_NUM(st.st_nlink);
  row[RS_SIZE] = RS_NUM(st.st_size);
  row[RS_MTIME_SEC] = (double) st.st_mtim.tv_sec;
  row[RS_MTIME_NSEC] = (double) st.st_mtim.tv_nsec;
  row[RS_CTIME_SEC] = (double) st.st_ctim.tv_sec;
  row[RS_CTIME_NSEC] = (double) st.st_ctim.tv_nsec;
  row[RS_BTIME_SEC] = (double) st.st_ctim.tv_sec;
  row[RS_BTIME_NSEC] = (double) st.st_ctim.tv_nsec;
  row[RS_DEV_HI] = (double) (uint32_t) (dev >> 32);
  row[RS_DEV_LO] = (double) (uint32_t) dev;
  row[RS_RDEV] = RS_NUM(st.st_rdev);
  row[RS_ERRNO] = 0;
  return 0;
}

/* Appends one entry; its row is left for the caller to fill. Returns NULL when out of memory. */
static double *readdir_stat_push(req_t *r, const char *name) {
  size_t len = strlen(name) + 1;
  if (r->count == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 64;
    size_t *noff = realloc(r->noff, cap * sizeof(size_t));
    if (noff == NULL) return NULL;
    r->noff = noff;
    double *rows = realloc(r->rows, cap * RS_FIELDS * sizeof(double));
    if (rows == NULL) return NULL;
    r->rows = rows;
    r->cap = cap;
  }
  if (r->nbuf_len + len > r->nbuf_cap) {
    size_t cap = r->nbuf_cap ? r->nbuf_cap * 2 : 4096;
    while (cap < r->nbuf_len + len) cap *= 2;
    char *nbuf = realloc(r->nbuf, cap);
    if (nbuf == NULL) return NULL;
    r->nbuf = nbuf;
    r->nbuf_cap = cap;
  }
  memcpy(r->nbuf + r->nbuf_len, name, len);
  r->noff[r->count] = r->nbuf_len;
  r->nbuf_len += len;
  return r->rows + RS_FIELDS * r->count++;
}

/* Looks at one entry read from the directory open as fd; returns 0 or an errno (ENOMEM). */
static int readdir_stat_entry(req_t *r, int fd, const char *n) {
  if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) return 0;
  double row[RS_FIELDS];
  memset(row, 0, sizeof(row));
  if (!utf8_valid((const unsigned char *) n)) {
    row[RS_ERRNO] = EILSEQ;
  } else {
    int err = stat_row(fd, n, row);
    if (err == ENOENT) return 0;
    if (err != 0) row[RS_ERRNO] = err;
  }
  double *slot = readdir_stat_push(r, n);
  if (slot == NULL) return ENOMEM;
  memcpy(slot, row, sizeof(row));
  return 0;
}

/*
 * Appends the entries of the directory at path; returns 0 or an errno (entries may have
 * been appended before a failure). getdents64 straight into a buffer on the stack:
 * opendir(3) would add an fstat, two fcntls and a 32 KiB allocation per directory, a
 * third of the syscalls of a small one.
 */
static int read_dir_stat(req_t *r, const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno;
  _Alignas(struct dirent64) char buf[32768];
  int err = 0;
  for (;;) {
    ssize_t n = getdents64(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    for (ssize_t pos = 0; pos < n && err == 0;) {
      const struct dirent64 *ent = (const struct dirent64 *) (buf + pos);
      pos += ent->d_reclen;
      err = readdir_stat_entry(r, fd, ent->d_name);
    }
    if (err != 0) break;
  }
  close(fd);
  return err;
}

static void do_readdir_stat(req_t *r) {
  r->err = read_dir_stat(r, r->path);
}

/* Each directory in turn; one that fails keeps its errno and none of its entries. */
static void do_readdir_stat_many(req_t *r) {
  for (size_t i = 0; i < r->npaths; i++) {
    size_t first = r->count;
    r->dir_first[i] = first;
    r->dir_err[i] = read_dir_stat(r, r->paths[i]);
    if (r->dir_err[i] != 0) {
      if (r->count > first) r->nbuf_len = r->noff[first];
      r->count = first;
    }
    r->dir_count[i] = r->count - first;
  }
}

int fuse_reply_shim_invalidate(uint64_t ino, const char *name);
int fuse_reply_shim_watch(uint64_t ino, int on);

static void execute(napi_env env, void *data) {
  (void) env;
  req_t *r = (req_t *) data;
  int rc = 0;
  switch (r->op) {
    case OP_LGETXATTR:
      do_getxattr(r);
      return;
    case OP_LLISTXATTR:
      do_listxattr(r);
      return;
    case OP_READDIR:
      do_readdir(r);
      return;
    case OP_READDIR_STAT:
      do_readdir_stat(r);
      return;
    case OP_READDIR_STAT_MANY:
      do_readdir_stat_many(r);
      return;
    case OP_LSETXATTR:
      rc = lsetxattr(r->path, r->name, r->value, r->value_len, r->flags);
      break;
    case OP_LREMOVEXATTR:
      rc = lremovexattr(r->path, r->name);
      break;
    case OP_MKNOD:
      rc = mknod(r->path, r->mode, r->dev);
      break;
    case OP_UTIMENSAT:
      rc = utimensat(AT_FDCWD, r->path, r->ts, r->nofollow ? AT_SYMLINK_NOFOLLOW : 0);
      break;
    case OP_FUTIMENS:
      rc = futimens(r->fd, r->ts);
      break;
    case OP_SYNCFS:
      rc = syncfs(r->fd);
      break;
    case OP_PUNCH:
      rc = fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) r->offset, (off_t) r->length);
      break;
    case OP_INVALIDATE:
      /* Off the JS thread: the kernel may hold this until a lookup that JS answers is done. */
      rc = fuse_reply_shim_invalidate((uint64_t) r->offset, r->path);
      if (rc < 0) {
        r->err = -rc;
        return;
      }
      r->count = (size_t) rc;
      return;
  }
  if (rc < 0) r->err = errno;
}

/* ------------------------------------------------------------------------ */
/* JS-thread side                                                            */

/* An Error shaped like Node's fs errors; path may be NULL, fd < 0 for none. */
static napi_value make_error(napi_env env, int err, const char *syscall, const char *path, int fd) {
  char code[32];
  char msg_buf[256];
  char message[PATH_MAX + 512];
  napi_value code_v, msg_v, err_v, tmp;

  errno_name(err, code, sizeof(code));
  const char *desc = strerror_r(err, msg_buf, sizeof(msg_buf));
  if (path != NULL) {
    snprintf(message, sizeof(message), "%s: %s, %s '%s'", code, desc, syscall, path);
  } else {
    snprintf(message, sizeof(message), "%s: %s, %s", code, desc, syscall);
  }

  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_error(env, code_v, msg_v, &err_v);

  napi_create_int32(env, -err, &tmp);
  napi_set_named_property(env, err_v, "errno", tmp);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &tmp);
  napi_set_named_property(env, err_v, "syscall", tmp);
  if (path != NULL) {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &tmp);
    napi_set_named_property(env, err_v, "path", tmp);
  }
  if (fd >= 0) {
    napi_create_int32(env, fd, &tmp);
    napi_set_named_property(env, err_v, "fd", tmp);
  }
  return err_v;
}

static napi_value make_sys_error(napi_env env, req_t *r) {
  return make_error(env, r->err, r->syscall, r->path, r->op == OP_FUTIMENS ? r->fd : -1);
}

/* { names, stats } for `count` entries from `first`, stats a view of `buffer` (all rows). */
static napi_value make_dir_stats(napi_env env, req_t *r, napi_value buffer, size_t first, size_t count) {
  napi_value result, names, stats;
  napi_create_object(env, &result);
  napi_create_array_with_length(env, count, &names);
  for (size_t i = 0; i < count; i++) {
    napi_value v;
    napi_create_string_utf8(env, r->nbuf + r->noff[first + i], NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, names, (uint32_t) i, v);
  }
  napi_create_typedarray(env, napi_float64_array, count * RS_FIELDS, buffer, first * RS_FIELDS * sizeof(double), &stats);
  napi_set_named_property(env, result, "names", names);
  napi_set_named_property(env, result, "stats", stats);
  return result;
}

/* One ArrayBuffer with every row of the request, or NULL when out of memory. */
static napi_value make_rows_buffer(napi_env env, req_t *r) {
  napi_value buffer;
  void *data = NULL;
  size_t bytes = r->count * RS_FIELDS * sizeof(double);
  if (napi_create_arraybuffer(env, bytes, &data, &buffer) != napi_ok) return NULL;
  if (bytes > 0) memcpy(data, r->rows, bytes);
  return buffer;
}

static napi_value make_result(napi_env env, req_t *r) {
  napi_value result = NULL;
  switch (r->op) {
    case OP_LGETXATTR: {
      void *data = NULL;
      napi_create_buffer_copy(env, r->value_len, r->value_len ? r->value : "", &data, &result);
      break;
    }
    case OP_LLISTXATTR: {
      napi_create_array(env, &result);
      uint32_t idx = 0;
      size_t start = 0;
      for (size_t i = 0; i < r->value_len; i++) {
        if (r->value[i] != '\0') continue;
        if (i > start) {
          napi_value s;
          napi_create_string_utf8(env, r->value + start, i - start, &s);
          napi_set_element(env, result, idx++, s);
        }
        start = i + 1;
      }
      if (start < r->value_len) {
        napi_value s;
        napi_create_string_utf8(env, r->value + start, r->value_len - start, &s);
        napi_set_element(env, result, idx++, s);
      }
      break;
    }
    case OP_READDIR: {
      napi_value names, inos, types;
      napi_create_object(env, &result);
      napi_create_array_with_length(env, r->count, &names);
      napi_create_array_with_length(env, r->count, &inos);
      napi_create_array_with_length(env, r->count, &types);
      for (size_t i = 0; i < r->count; i++) {
        napi_value v;
        napi_create_string_utf8(env, r->names[i], NAPI_AUTO_LENGTH, &v);
        napi_set_element(env, names, (uint32_t) i, v);
        napi_create_double(env, (double) r->inos[i], &v);
        napi_set_element(env, inos, (uint32_t) i, v);
        napi_create_uint32(env, r->types[i], &v);
        napi_set_element(env, types, (uint32_t) i, v);
      }
      napi_set_named_property(env, result, "names", names);
      napi_set_named_property(env, result, "inos", inos);
      napi_set_named_property(env, result, "types", types);
      break;
    }
    case OP_READDIR_STAT: {
      napi_value buffer = make_rows_buffer(env, r);
      if (buffer == NULL) return NULL;
      result = make_dir_stats(env, r, buffer, 0, r->count);
      break;
    }
    case OP_READDIR_STAT_MANY: {
      napi_value buffer = make_rows_buffer(env, r);
      if (buffer == NULL) return NULL;
      napi_create_array_with_length(env, r->npaths, &result);
      for (size_t i = 0; i < r->npaths; i++) {
        napi_value v = r->dir_err[i] != 0 ? make_error(env, r->dir_err[i], "readdir", r->paths[i], -1)
                                          : make_dir_stats(env, r, buffer, r->dir_first[i], r->dir_count[i]);
        napi_set_element(env, result, (uint32_t) i, v);
      }
      break;
    }
    case OP_INVALIDATE:
      napi_get_boolean(env, r->count == 0, &result);
      break;
    default:
      napi_get_undefined(env, &result);
      break;
  }
  return result;
}

static void complete(napi_env env, napi_status status, void *data) {
  req_t *r = (req_t *) data;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);

  if (status == napi_cancelled && r->err == 0) r->err = ECANCELED;

  napi_value result = r->err != 0 ? NULL : make_result(env, r);
  if (r->err == 0 && result == NULL) r->err = ENOMEM;
  if (r->err != 0) {
    napi_reject_deferred(env, r->deferred, make_sys_error(env, r));
  } else {
    napi_resolve_deferred(env, r->deferred, result);
  }

  napi_close_handle_scope(env, scope);
  napi_delete_async_work(env, r->work);
  req_free(r);
}

/* Returns a promise rejected with a TypeError carrying `code`. */
static napi_value reject_arg(napi_env env, const char *code, const char *message) {
  napi_value promise, code_v, msg_v, err_v;
  napi_deferred deferred;
  napi_create_promise(env, &deferred, &promise);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_type_error(env, code_v, msg_v, &err_v);
  napi_reject_deferred(env, deferred, err_v);
  return promise;
}

/* Copies a JS string argument into a fresh C string; rejects embedded NULs. */
static int get_cstring(napi_env env, napi_value v, char **out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return -1;
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return -1;
  char *s = malloc(len + 1);
  if (s == NULL) return -1;
  size_t copied = 0;
  napi_get_value_string_utf8(env, v, s, len + 1, &copied);
  if (strlen(s) != copied) {
    free(s);
    return -2;
  }
  *out = s;
  return 0;
}

static int get_number_i64(napi_env env, napi_value v, int64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return -1;
  double d;
  napi_get_value_double(env, v, &d);
  if (d != d) return -1; /* NaN */
  return napi_get_value_int64(env, v, out) == napi_ok ? 0 : -1;
}

static napi_value queue(napi_env env, req_t *r) {
  napi_value promise, resource_name;
  if (napi_create_promise(env, &r->deferred, &promise) != napi_ok) {
    req_free(r);
    return NULL;
  }
  napi_create_string_utf8(env, r->syscall, NAPI_AUTO_LENGTH, &resource_name);
  if (napi_create_async_work(env, NULL, resource_name, execute, complete, r, &r->work) != napi_ok ||
      napi_queue_async_work(env, r->work) != napi_ok) {
    r->err = ENOMEM;
    napi_reject_deferred(env, r->deferred, make_sys_error(env, r));
    req_free(r);
  }
  return promise;
}

static req_t *req_new(op_t op, const char *syscall) {
  req_t *r = calloc(1, sizeof(req_t));
  if (r == NULL) return NULL;
  r->op = op;
  r->syscall = syscall;
  r->fd = -1;
  return r;
}

#define GET_ARGS(n)                                                        \
  size_t argc = n;                                                         \
  napi_value argv[n];                                                      \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);                    \
  for (size_t i_ = argc; i_ < n; i_++) napi_get_undefined(env, &argv[i_]);

#define REQ_NEW(op, syscall)                                               \
  req_t *r = req_new(op, syscall);                                         \
  if (r == NULL) return reject_arg(env, "ERR_MEMORY", "out of memory");

#define ARG_STRING(idx, field, what)                                       \
  do {                                                                     \
    int rc_ = get_cstring(env, argv[idx], &r->field);                      \
    if (rc_ == -2) {                                                       \
      req_free(r);                                                         \
      return reject_arg(env, "ERR_INVALID_ARG_VALUE",                      \
                        "The \"" what "\" argument must not contain null bytes"); \
    }                                                                      \
    if (rc_ != 0) {                                                        \
      req_free(r);                                                         \
      return reject_arg(env, "ERR_INVALID_ARG_TYPE",                       \
                        "The \"" what "\" argument must be of type string"); \
    }                                                                      \
  } while (0)

#define ARG_I64(idx, var, what)                                            \
  int64_t var;                                                             \
  if (get_number_i64(env, argv[idx], &var) != 0) {                         \
    req_free(r);                                                           \
    return reject_arg(env, "ERR_INVALID_ARG_TYPE",                         \
                      "The \"" what "\" argument must be of type number"); \
  }

static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  GET_ARGS(2)
  REQ_NEW(OP_LGETXATTR, "lgetxattr")
  ARG_STRING(0, path, "path");
  ARG_STRING(1, name, "name");
  return queue(env, r);
}

static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  GET_ARGS(4)
  REQ_NEW(OP_LSETXATTR, "lsetxattr")
  ARG_STRING(0, path, "path");
  ARG_STRING(1, name, "name");
  bool is_buffer = false;
  napi_is_buffer(env, argv[2], &is_buffer);
  if (!is_buffer) {
    req_free(r);
    return reject_arg(env, "ERR_INVALID_ARG_TYPE", "The \"value\" argument must be a Buffer");
  }
  void *data = NULL;
  size_t len = 0;
  napi_get_buffer_info(env, argv[2], &data, &len);
  /* Copy: the caller may reuse or mutate its buffer while the work runs. */
  r->value = malloc(len > 0 ? len : 1);
  if (r->value == NULL) {
    req_free(r);
    return reject_arg(env, "ERR_MEMORY", "out of memory");
  }
  if (len > 0) memcpy(r->value, data, len);
  r->value_len = len;
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  if (t == napi_undefined) {
    r->flags = 0;
  } else {
    ARG_I64(3, flags, "flags")
    r->flags = (int) flags;
  }
  return queue(env, r);
}

static napi_value js_getxattr(napi_env env, napi_callback_info info) {
  GET_ARGS(2)
  REQ_NEW(OP_LGETXATTR, "getxattr")
  r->follow = 1;
  ARG_STRING(0, path, "path");
  ARG_STRING(1, name, "name");
  return queue(env, r);
}

static napi_value js_listxattr(napi_env env, napi_callback_info info) {
  GET_ARGS(1)
  REQ_NEW(OP_LLISTXATTR, "listxattr")
  r->follow = 1;
  ARG_STRING(0, path, "path");
  return queue(env, r);
}

/*
 * Sets close-on-exec on every descriptor above 2, so that child processes (quiesce hooks)
 * do not inherit /dev/fuse and keep a mount alive after its daemon is gone. Synchronous:
 * it only walks /proc/self/fd. Returns how many descriptors it changed.
 */
static napi_value js_cloexec_all(napi_env env, napi_callback_info info) {
  (void) info;
  int changed = 0;
  DIR *dir = opendir("/proc/self/fd");
  if (dir != NULL) {
    int self = dirfd(dir);
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL) {
      char *end;
      long fd = strtol(ent->d_name, &end, 10);
      if (*end != '\0' || fd <= 2 || fd == self) continue;
      int flags = fcntl((int) fd, F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC) && fcntl((int) fd, F_SETFD, flags | FD_CLOEXEC) == 0) changed++;
    }
    closedir(dir);
  }
  napi_value result;
  napi_create_int32(env, changed, &result);
  return result;
}

/* Frees the disk space of a byte range, keeping the file size (fallocate PUNCH_HOLE). */
static napi_value js_punch_hole(napi_env env, napi_callback_info info) {
  GET_ARGS(3)
  REQ_NEW(OP_PUNCH, "fallocate")
  ARG_I64(0, fd, "fd")
  ARG_I64(1, offset, "offset")
  ARG_I64(2, length, "length")
  if (fd < 0 || fd > INT_MAX || offset < 0 || length <= 0) {
    req_free(r);
    return reject_arg(env, "ERR_OUT_OF_RANGE", "punchHole: fd, offset or length is out of range");
  }
  r->fd = (int) fd;
  r->offset = offset;
  r->length = length;
  return queue(env, r);
}

/* Writes out everything cached for the filesystem holding fd (syncfs). */
static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  GET_ARGS(1)
  REQ_NEW(OP_SYNCFS, "syncfs")
  ARG_I64(0, fd, "fd")
  if (fd < 0 || fd > INT_MAX) {
    req_free(r);
    return reject_arg(env, "ERR_OUT_OF_RANGE", "syncfs: fd is out of range");
  }
  r->fd = (int) fd;
  return queue(env, r);
}

static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  GET_ARGS(1)
  REQ_NEW(OP_LLISTXATTR, "llistxattr")
  ARG_STRING(0, path, "path");
  return queue(env, r);
}

static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  GET_ARGS(2)
  REQ_NEW(OP_LREMOVEXATTR, "lremovexattr")
  ARG_STRING(0, path, "path");
  ARG_STRING(1, name, "name");
  return queue(env, r);
}

static napi_value js_mknod(napi_env env, napi_callback_info info) {
  GET_ARGS(3)
  REQ_NEW(OP_MKNOD, "mknod")
  ARG_STRING(0, path, "path");
  ARG_I64(1, mode, "mode")
  ARG_I64(2, dev, "dev")
  r->mode = (mode_t) mode;
  r->dev = (dev_t) dev;
  return queue(env, r);
}

#define ARG_TIMES(base)                                                    \
  ARG_I64(base, asec, "atimeSec")                                          \
  ARG_I64(base + 1, ansec, "atimeNsec")                                    \
  ARG_I64(base + 2, msec, "mtimeSec")                                      \
  ARG_I64(base + 3, mnsec, "mtimeNsec")                                    \
  r->ts[0].tv_sec = (time_t) asec;                                         \
  r->ts[0].tv_nsec = (long) ansec;                                         \
  r->ts[1].tv_sec = (time_t) msec;                                         \
  r->ts[1].tv_nsec = (long) mnsec;

static napi_value js_utimensat(napi_env env, napi_callback_info info) {
  GET_ARGS(6)
  REQ_NEW(OP_UTIMENSAT, "utimensat")
  ARG_STRING(0, path, "path");
  ARG_TIMES(1)
  napi_value b;
  bool nofollow = false;
  napi_coerce_to_bool(env, argv[5], &b);
  napi_get_value_bool(env, b, &nofollow);
  r->nofollow = nofollow ? 1 : 0;
  return queue(env, r);
}

static napi_value js_futimens(napi_env env, napi_callback_info info) {
  GET_ARGS(5)
  REQ_NEW(OP_FUTIMENS, "futimens")
  ARG_I64(0, fd, "fd")
  if (fd < 0 || fd > INT_MAX) {
    req_free(r);
    return reject_arg(env, "ERR_OUT_OF_RANGE", "The \"fd\" argument is out of range");
  }
  r->fd = (int) fd;
  ARG_TIMES(1)
  return queue(env, r);
}

static napi_value js_readdir_ino(napi_env env, napi_callback_info info) {
  GET_ARGS(1)
  REQ_NEW(OP_READDIR, "readdir")
  ARG_STRING(0, path, "path");
  return queue(env, r);
}

/* readdirStat(path): { names, stats } (see do_readdir_stat), on the thread pool. */
static napi_value js_readdir_stat(napi_env env, napi_callback_info info) {
  GET_ARGS(1)
  REQ_NEW(OP_READDIR_STAT, "readdir")
  ARG_STRING(0, path, "path");
  return queue(env, r);
}

/* readdirStatMany(paths): readdirStat of each, in one call on the thread pool: an array
   with, for each path, its { names, stats } or the Error readdirStat would reject with. */
static napi_value js_readdir_stat_many(napi_env env, napi_callback_info info) {
  GET_ARGS(1)
  REQ_NEW(OP_READDIR_STAT_MANY, "readdir")
  bool is_array = false;
  uint32_t n = 0;
  napi_is_array(env, argv[0], &is_array);
  if (!is_array) {
    req_free(r);
    return reject_arg(env, "ERR_INVALID_ARG_TYPE", "The \"paths\" argument must be an array of strings");
  }
  napi_get_array_length(env, argv[0], &n);
  r->paths = calloc(n > 0 ? n : 1, sizeof(char *));
  r->dir_first = calloc(n > 0 ? n : 1, sizeof(size_t));
  r->dir_count = calloc(n > 0 ? n : 1, sizeof(size_t));
  r->dir_err = calloc(n > 0 ? n : 1, sizeof(int));
  if (r->paths == NULL || r->dir_first == NULL || r->dir_count == NULL || r->dir_err == NULL) {
    req_free(r);
    return reject_arg(env, "ERR_MEMORY", "out of memory");
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, argv[0], i, &v);
    int rc = get_cstring(env, v, &r->paths[i]);
    if (rc != 0) {
      req_free(r);
      return reject_arg(env, rc == -2 ? "ERR_INVALID_ARG_VALUE" : "ERR_INVALID_ARG_TYPE",
                        rc == -2 ? "The \"paths\" argument must not contain null bytes"
                                 : "The \"paths\" argument must be an array of strings");
    }
    r->npaths = i + 1;
  }
  return queue(env, r);
}

/* readdirStatSync(path): the same on the calling thread, for processes that serve no mount. */
static napi_value js_readdir_stat_sync(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) napi_get_undefined(env, &argv[0]);
  req_t *r = req_new(OP_READDIR_STAT, "readdir");
  if (r == NULL) {
    napi_throw_error(env, "ERR_MEMORY", "out of memory");
    return NULL;
  }
  int rc = get_cstring(env, argv[0], &r->path);
  if (rc != 0) {
    req_free(r);
    napi_throw_type_error(env, rc == -2 ? "ERR_INVALID_ARG_VALUE" : "ERR_INVALID_ARG_TYPE",
                          rc == -2 ? "The \"path\" argument must not contain null bytes"
                                   : "The \"path\" argument must be of type string");
    return NULL;
  }
  do_readdir_stat(r);
  napi_value result = r->err != 0 ? NULL : make_result(env, r);
  if (r->err == 0 && result == NULL) r->err = ENOMEM;
  if (r->err != 0) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw(env, make_sys_error(env, r));
  }
  req_free(r);
  return result;
}

void fuse_reply_shim_stats(uint64_t *calls, uint64_t *uncached, uint64_t *invalidated);
void fuse_reply_shim_configure(double attr_timeout_s);

/* replyShimStats(): replies that went through fuse_reply_shim.c, how many were sent
   uncached (files with several links), and how many cached nodes were invalidated. */
static napi_value js_reply_shim_stats(napi_env env, napi_callback_info info) {
  uint64_t calls = 0, uncached = 0, invalidated = 0;
  fuse_reply_shim_stats(&calls, &uncached, &invalidated);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_double(env, (double) calls, &v);
  napi_set_named_property(env, out, "calls", v);
  napi_create_double(env, (double) uncached, &v);
  napi_set_named_property(env, out, "uncached", v);
  napi_create_double(env, (double) invalidated, &v);
  napi_set_named_property(env, out, "invalidated", v);
  return out;
}

/* configureReplyShim(attrTimeoutSeconds): how long the kernel may cache attributes. */
static napi_value js_configure_reply_shim(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double seconds = 1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1) napi_get_value_double(env, argv[0], &seconds);
  fuse_reply_shim_configure(seconds);
  return NULL;
}

/*
 * watchDirectory(ino, on): start or stop letting invalidateEntry() name the mount's
 * directory with inode number `ino` (see fuse_reply_shim.c). Throws when the table is full.
 */
static napi_value js_watch_directory(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t ino = 0;
  bool on = false;
  if (argc < 2 || get_number_i64(env, argv[0], &ino) != 0 || ino <= 0 || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "watchDirectory(ino: positive number, on: boolean)");
    return NULL;
  }
  if (fuse_reply_shim_watch((uint64_t) ino, on ? 1 : 0) != 0) {
    napi_throw_error(env, "ENOSPC", "watchDirectory: too many watched directories");
  }
  return NULL;
}

/*
 * invalidateEntry(ino, name | null): resolves true when the kernel dropped the entry
 * `name` of the watched directory `ino` (or its attributes, for null), false when it had
 * nothing cached. Runs on the thread pool: the kernel may wait for lookups JS answers.
 */
static napi_value js_invalidate_entry(napi_env env, napi_callback_info info) {
  GET_ARGS(2)
  REQ_NEW(OP_INVALIDATE, "fuse_notify_inval")
  ARG_I64(0, ino, "ino")
  if (ino <= 0) {
    req_free(r);
    return reject_arg(env, "ERR_OUT_OF_RANGE", "The \"ino\" argument must be positive");
  }
  r->offset = ino;
  napi_valuetype type;
  napi_typeof(env, argv[1], &type);
  if (type != napi_null) ARG_STRING(1, path, "name");
  return queue(env, r);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "getxattr", NULL, js_getxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "listxattr", NULL, js_listxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "punchHole", NULL, js_punch_hole, NULL, NULL, NULL, napi_enumerable, NULL },
    { "syncfs", NULL, js_syncfs, NULL, NULL, NULL, napi_enumerable, NULL },
    { "cloexecAll", NULL, js_cloexec_all, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL },
    { "utimensat", NULL, js_utimensat, NULL, NULL, NULL, napi_enumerable, NULL },
    { "futimens", NULL, js_futimens, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readdirIno", NULL, js_readdir_ino, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readdirStat", NULL, js_readdir_stat, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readdirStatSync", NULL, js_readdir_stat_sync, NULL, NULL, NULL, napi_enumerable, NULL },
    { "readdirStatMany", NULL, js_readdir_stat_many, NULL, NULL, NULL, napi_enumerable, NULL },
    { "replyShimStats", NULL, js_reply_shim_stats, NULL, NULL, NULL, napi_enumerable, NULL },
    { "configureReplyShim", NULL, js_configure_reply_shim, NULL, NULL, NULL, napi_enumerable, NULL },
    { "watchDirectory", NULL, js_watch_directory, NULL, NULL, NULL, napi_enumerable, NULL },
    { "invalidateEntry", NULL, js_invalidate_entry, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);

  napi_value v;
  napi_create_int64(env, UTIME_NOW, &v);
  napi_set_named_property(env, exports, "UTIME_NOW", v);
  napi_create_int64(env, UTIME_OMIT, &v);
  napi_set_named_property(env, exports, "UTIME_OMIT", v);
  napi_create_int32(env, XATTR_CREATE, &v);
  napi_set_named_property(env, exports, "XATTR_CREATE", v);
  napi_create_int32(env, XATTR_REPLACE, &v);
  napi_set_named_property(env, exports, "XATTR_REPLACE", v);
  napi_create_int32(env, RS_FIELDS, &v);
  napi_set_named_property(env, exports, "READDIR_STAT_FIELDS", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

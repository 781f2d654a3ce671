/* file.c — inputs that must be regular files, outputs that may be written,
 * and the atomic replacement of an output (cnf/file.h). */
#define _XOPEN_SOURCE 700

#include "cnf/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- What a path is -------------------------------------------------------- */

static const char *kind_name(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISFIFO(m))
        return "a FIFO (named pipe)";
    if (S_ISSOCK(m))
        return "a socket";
    return "not a regular file";
}

cnf_status cnf_file_check_input(const char *path)
{
    if (!path || !path[0])
        return cnf_error(CNF_EINVAL, "empty input file name");
    struct stat st;
    if (stat(path, &st) != 0)
        return cnf_error(CNF_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return cnf_error(CNF_EIO, "cannot open '%s': it is a directory", path);
    if (!S_ISREG(st.st_mode))
        return cnf_error(CNF_EIO, "cannot open '%s': it is %s, not a regular file", path,
                         kind_name(st.st_mode));
    /* O_NONBLOCK: should path become a FIFO between the stat and the open,
     * the open still returns at once, and the fstat below refuses it. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return cnf_error(CNF_EIO, "cannot open '%s': %s", path, strerror(errno));
    int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!regular)
        return cnf_error(CNF_EIO, "cannot open '%s': not a regular file", path);
    return CNF_OK;
}

cnf_status cnf_file_open_input(const char *path, FILE **f)
{
    *f = NULL;
    cnf_status s = cnf_file_check_input(path);
    if (s != CNF_OK)
        return s;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return cnf_error(CNF_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cnf_error(CNF_EIO, "cannot open '%s': not a regular file", path);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    *f = fdopen(fd, "r");
    if (!*f) {
        int e = errno;
        close(fd);
        return cnf_error(CNF_EIO, "cannot open '%s': %s", path, strerror(e));
    }
    return CNF_OK;
}

/* The directory part of path ("." for a bare name), malloc'd. */
static char *dir_of(const char *path)
{
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir)
        return NULL;
    const char *slash = strrchr(path, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == path)
        strcpy(dir, "/");
    else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    return dir;
}

/* The file an output at path replaces: path itself, or what the symbolic
 * link at path resolves to (*target, malloc'd). Refuses what may not be
 * replaced; *exists says whether there is a file to replace. */
static cnf_status resolve_output(const char *path, char **target, int *exists)
{
    *target = NULL;
    *exists = 0;
    if (!path || !path[0])
        return cnf_error(CNF_EINVAL, "empty output file name");
    size_t n = strlen(path);
    if (path[n - 1] == '/')
        return cnf_error(CNF_EIO, "output '%s' names a directory, not a file", path);
    struct stat lst, st;
    char *t = NULL;
    if (lstat(path, &lst) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            return cnf_error(CNF_EIO, "cannot use output '%s': %s", path, strerror(errno));
        t = strdup(path);
    } else if (S_ISLNK(lst.st_mode)) {
        if (stat(path, &st) != 0)
            return cnf_error(CNF_EIO, "output '%s' is a symbolic link to a missing file (%s); "
                             "remove the link or name the file itself", path, strerror(errno));
        t = realpath(path, NULL);
        if (!t)
            return cnf_error(CNF_EIO, "cannot resolve the symbolic link '%s': %s", path,
                             strerror(errno));
        if (!S_ISREG(st.st_mode)) {
            cnf_status s = cnf_error(CNF_EIO, "output '%s' is a symbolic link to '%s', which is "
                                     "%s; cnf writes outputs only as regular files", path, t,
                                     kind_name(st.st_mode));
            free(t);
            return s;
        }
        *exists = 1;
    } else if (S_ISDIR(lst.st_mode)) {
        return cnf_error(CNF_EIO, "output '%s' is a directory", path);
    } else if (!S_ISREG(lst.st_mode)) {
        return cnf_error(CNF_EIO, "output '%s' is %s; cnf writes outputs only as regular files "
                         "and does not replace anything else", path, kind_name(lst.st_mode));
    } else {
        *exists = 1;
        t = strdup(path);
    }
    if (!t)
        return cnf_error(CNF_ENOMEM, "out of memory");
    char *dir = dir_of(t);
    if (!dir) {
        free(t);
        return cnf_error(CNF_ENOMEM, "out of memory");
    }
    cnf_status s = CNF_OK;
    if (stat(dir, &st) != 0)
        s = cnf_error(CNF_EIO, "output directory '%s' does not exist (for '%s')", dir, path);
    else if (!S_ISDIR(st.st_mode))
        s = cnf_error(CNF_EIO, "'%s' is not a directory (for output '%s')", dir, path);
    else if (access(dir, W_OK | X_OK) != 0)
        s = cnf_error(CNF_EIO, "cannot write in output directory '%s': %s", dir, strerror(errno));
    free(dir);
    if (s != CNF_OK) {
        free(t);
        return s;
    }
    *target = t;
    return CNF_OK;
}

cnf_status cnf_file_check_output(const char *path, const char *const *inputs, size_t n_inputs)
{
    char *target;
    int exists;
    cnf_status s = resolve_output(path, &target, &exists);
    if (s != CNF_OK)
        return s;
    free(target);
    struct stat out;
    if (!exists || stat(path, &out) != 0)
        return CNF_OK;   /* a new file cannot be an input */
    for (size_t i = 0; i < n_inputs; i++) {
        struct stat in;
        if (!inputs[i] || stat(inputs[i], &in) != 0)
            continue;
        if (in.st_dev == out.st_dev && in.st_ino == out.st_ino)
            return cnf_error(CNF_EIO, "output '%s' is the input '%s' (the same file): writing "
                             "it would destroy the input; choose another output name", path,
                             inputs[i]);
    }
    return CNF_OK;
}

/* ---- Temporary names ------------------------------------------------------- */

#define TMP_TAG ".cnf-tmp."
/* TMP_TAG, a pid and a counter: ".cnf-tmp." + 10 + "." + 20 digits. */
#define TMP_SUFFIX_MAX (sizeof TMP_TAG - 1 + 10 + 1 + 20)
/* "~" and eight hex digits after a cut name. */
#define TMP_HASH_LEN 9

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The part of every temporary name of base (a file name without directory)
 * before TMP_TAG, fitting name_max with any suffix: base itself, or base cut
 * at a character boundary followed by "~" and its hash. buf has room for
 * name_max + 1 bytes. */
static void temp_stem(const char *base, size_t name_max, char *buf)
{
    size_t n = strlen(base);
    if (n + TMP_SUFFIX_MAX <= name_max) {
        memcpy(buf, base, n + 1);
        return;
    }
    size_t keep = name_max - TMP_SUFFIX_MAX - TMP_HASH_LEN;
    while (keep > 0 && ((unsigned char)base[keep] & 0xC0) == 0x80)
        keep--;   /* do not split a UTF-8 sequence */
    memcpy(buf, base, keep);
    snprintf(buf + keep, TMP_HASH_LEN + 1, "~%08x", (unsigned)fnv1a(base));
}

static size_t dir_name_max(const char *dir)
{
    long m = pathconf(dir, _PC_NAME_MAX);
    /* a bound the suffix fits in; 255 where the file system does not say */
    return m >= (long)(TMP_SUFFIX_MAX + TMP_HASH_LEN + 1) ? (size_t)m : 255;
}

/* If s is "<digits>" (end 0) or "<digits>.<digits>" (end 1, or 0 allowed
 * when optional_counter), the leading number in *pid. */
static int parse_pid_counter(const char *s, int optional_counter, long *pid)
{
    char *end;
    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    long p = strtol(s, &end, 10);
    if (errno || p <= 0)
        return 0;
    if (*end == '\0') {
        if (!optional_counter)
            return 0;
    } else {
        if (*end != '.' || end[1] < '0' || end[1] > '9')
            return 0;
        for (end++; *end; end++)
            if (*end < '0' || *end > '9')
                return 0;
    }
    *pid = p;
    return 1;
}

static int process_gone(long pid)
{
    if (pid == (long)getpid())
        return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Remove the leftovers of target: "<stem>.cnf-tmp.<pid>.<n>" and, from
 * earlier versions, "<name>.tmp.<pid>[.<n>]", whose process is gone. Best
 * effort: an unreadable directory only means nothing is removed. */
static void remove_stale(const char *dir, const char *base, const char *stem)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    size_t ls = strlen(stem), lb = strlen(base), lt = sizeof TMP_TAG - 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        long pid;
        int stale = 0;
        if (!strncmp(name, stem, ls) && !strncmp(name + ls, TMP_TAG, lt))
            stale = parse_pid_counter(name + ls + lt, 0, &pid);
        else if (!strncmp(name, base, lb) && !strncmp(name + lb, ".tmp.", 5))
            stale = parse_pid_counter(name + lb + 5, 1, &pid);
        if (!stale || !process_gone(pid))
            continue;
        size_t n = strlen(dir) + strlen(name) + 2;
        char *p = malloc(n);
        if (!p)
            break;
        snprintf(p, n, "%s/%s", dir, name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode))
            unlink(p);
        free(p);
    }
    closedir(d);
}

/* ---- Temporaries a signal handler may remove ------------------------------ */

static _Atomic(char *) pending[CNF_FILE_MAX_PENDING];

static void pending_add(char *name)
{
    for (size_t i = 0; i < CNF_FILE_MAX_PENDING; i++) {
        char *expected = NULL;
        if (atomic_compare_exchange_strong(&pending[i], &expected, name))
            return;
    }
}

static void pending_remove(const char *name)
{
    for (size_t i = 0; i < CNF_FILE_MAX_PENDING; i++) {
        char *expected = (char *)name;
        if (atomic_compare_exchange_strong(&pending[i], &expected, NULL))
            return;
    }
}

void cnf_file_remove_temporaries(void)
{
    for (size_t i = 0; i < CNF_FILE_MAX_PENDING; i++) {
        char *name = atomic_load(&pending[i]);
        if (name)
            unlink(name);
    }
}

/* ---- Atomic replacement ---------------------------------------------------- */

struct cnf_file_out {
    char *path;      /* as given, for messages */
    char *target;    /* the file replaced: path, or where its link points */
    char *temp;      /* the temporary file, in target's directory */
    int fd;
    int failed;      /* a write failed: the commit refuses */
};

const char *cnf_file_out_path(const cnf_file_out *o)
{
    return o->path;
}

const char *cnf_file_out_temp_path(const cnf_file_out *o)
{
    return o->temp;
}

static void out_free(cnf_file_out *o, int remove_temp)
{
    if (o->fd >= 0)
        close(o->fd);
    if (o->temp) {
        if (remove_temp)
            unlink(o->temp);
        pending_remove(o->temp);
    }
    free(o->path);
    free(o->target);
    free(o->temp);
    free(o);
}

cnf_file_out *cnf_file_out_open(const char *path)
{
    char *target;
    int exists;
    if (resolve_output(path, &target, &exists) != CNF_OK)
        return NULL;
    cnf_file_out *o = calloc(1, sizeof *o);
    if (!o) {
        free(target);
        cnf_error(CNF_ENOMEM, "out of memory");
        return NULL;
    }
    o->fd = -1;
    o->target = target;
    o->path = strdup(path);
    char *dir = dir_of(target);
    size_t name_max = dir ? dir_name_max(dir) : 0;
    char *stem = malloc(name_max + 1);
    size_t cap = (dir ? strlen(dir) : 0) + name_max + 2;
    char *temp = malloc(cap);
    if (!o->path || !dir || !stem || !temp) {
        cnf_error(CNF_ENOMEM, "out of memory");
        free(dir);
        free(stem);
        free(temp);
        out_free(o, 0);
        return NULL;
    }
    const char *slash = strrchr(target, '/');
    const char *base = slash ? slash + 1 : target;
    temp_stem(base, name_max, stem);
    remove_stale(dir, base, stem);
    static atomic_ulong counter;
    int fd = -1, err = 0;
    /* O_EXCL: never write into a file someone else holds; a clash (the
     * leftover of an earlier process with this pid) takes the next number. */
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        unsigned long serial = atomic_fetch_add(&counter, 1);
        snprintf(temp, cap, "%s/%s%s%ld.%lu", dir, stem, TMP_TAG, (long)getpid(), serial);
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        err = errno;
        if (fd < 0 && err != EEXIST)
            break;
    }
    free(dir);
    free(stem);
    if (fd < 0) {
        cnf_error(CNF_EIO, "cannot create '%s' (temporary file for '%s'): %s", temp, path,
                  strerror(err));
        free(temp);
        out_free(o, 0);
        return NULL;
    }
    o->fd = fd;
    o->temp = temp;
    pending_add(temp);
    return o;
}

cnf_status cnf_file_out_write(cnf_file_out *o, const void *bytes, size_t n)
{
    if (!o)
        return cnf_error(CNF_EINVAL, "no output file");
    if (o->failed)
        return cnf_error(CNF_EIO, "cannot write '%s': an earlier write failed", o->path);
    const unsigned char *p = bytes;
    while (n > 0) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t w = write(o->fd, p, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            o->failed = 1;
            return cnf_error(CNF_EIO, "cannot write '%s': %s", o->path,
                             w < 0 ? strerror(errno) : "nothing written");
        }
        p += w;
        n -= (size_t)w;
    }
    return CNF_OK;
}

/* The replaced file's permission bits (and owner and group where the
 * process may set them) onto the new one: a rewrite must not widen or
 * narrow who can read the file. Not the set-id bits: on a file that is now
 * someone else's, they would grant what was never granted. */
static cnf_status keep_access(cnf_file_out *o)
{
    struct stat st;
    if (stat(o->target, &st) != 0)
        return CNF_OK;   /* nothing to replace */
    if (fchown(o->fd, st.st_uid, st.st_gid) != 0)
        (void)!fchown(o->fd, (uid_t)-1, st.st_gid);   /* best effort: group only */
    if (fchmod(o->fd, st.st_mode & 0777) != 0)
        return cnf_error(CNF_EIO, "cannot set the mode of '%s': %s", o->temp, strerror(errno));
    return CNF_OK;
}

cnf_status cnf_file_out_commit(cnf_file_out *o)
{
    if (!o)
        return cnf_error(CNF_EINVAL, "no output file to commit");
    cnf_status s = o->failed ? cnf_error(CNF_EIO, "cannot commit '%s': a write failed", o->path)
                             : keep_access(o);
    /* The data must be on disk before the name points at it, or a crash
     * right after the rename could leave an empty file under the target. */
    if (s == CNF_OK && fsync(o->fd) != 0)
        s = cnf_error(CNF_EIO, "cannot write '%s': %s", o->path, strerror(errno));
    if (o->fd >= 0) {
        int rc = close(o->fd);
        o->fd = -1;
        if (s == CNF_OK && rc != 0)
            s = cnf_error(CNF_EIO, "cannot write '%s': %s", o->path, strerror(errno));
    }
    if (s == CNF_OK && rename(o->temp, o->target) != 0)
        s = cnf_error(CNF_EIO, "cannot rename '%s' to '%s': %s", o->temp, o->target,
                      strerror(errno));
    out_free(o, s != CNF_OK);
    return s;
}

void cnf_file_out_abort(cnf_file_out *o)
{
    if (o)
        out_free(o, 1);
}

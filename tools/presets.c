/* presets.c — the preset search of `cnf train --flow NAME` (presets.h). */
#define _XOPEN_SOURCE 700   /* realpath */
#include "presets.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#ifndef CNF_SOURCE_FLOWS_DIR
#define CNF_SOURCE_FLOWS_DIR ""
#endif
#ifndef CNF_BUILD_BIN_DIR
#define CNF_BUILD_BIN_DIR ""
#endif
#ifndef CNF_FLOWS_FROM_BIN
#define CNF_FLOWS_FROM_BIN "../share/cnf/flows"
#endif

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The directory of the running executable, canonical; 0 on success. */
static int exe_dir(char *buf, size_t n)
{
    char path[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    if (len <= 0)
        return -1;
    path[len] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return snprintf(buf, n, "%s", path) >= (int)n ? -1 : 0;
}

/* Is dir, resolved, the same directory as the canonical exe directory? */
static int same_dir(const char *dir, const char *exe)
{
    char a[PATH_MAX];
    return dir[0] && realpath(dir, a) && !strcmp(a, exe);
}

/* Try dir/file; on a hit copy it to buf. searched collects the places
 * tried, for the message. */
static int try_dir(const char *dir, size_t len, const char *file, char *buf, size_t n,
                   char *searched, size_t ns)
{
    if (!len)
        return 0;
    if (snprintf(buf, n, "%.*s/%s", (int)len, dir, file) >= (int)n)
        return 0;
    if (is_file(buf)) {
        char canon[PATH_MAX];   /* the record names the file without "bin/.." */
        if (realpath(buf, canon) && strlen(canon) < n)
            strcpy(buf, canon);
        return 1;
    }
    size_t used = strlen(searched);
    snprintf(searched + used, ns - used, "%s%.*s", used ? ", " : "", (int)len, dir);
    return 0;
}

const char *cli_preset_find(const char *name, char *buf, size_t n)
{
    struct stat st;
    if (stat(name, &st) == 0 || strchr(name, '/') || !name[0]) {
        /* a path: run_config_load names a missing one, or one that is
         * not a regular file (a directory, a FIFO) */
        snprintf(buf, n, "%s", name);
        return buf;
    }
    char file[512];
    size_t len = strlen(name);
    if (snprintf(file, sizeof file, "%s%s", name,
                 len > 4 && !strcmp(name + len - 4, ".cfg") ? "" : ".cfg") >= (int)sizeof file)
        cli_usage("--flow %.40s...: name too long", name);
    char searched[4096] = "";
    const char *env = getenv("CNF_FLOWS_PATH");
    for (const char *p = env; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t l = colon ? (size_t)(colon - p) : strlen(p);
        if (try_dir(p, l, file, buf, n, searched, sizeof searched))
            return buf;
        p += l + (colon ? 1 : 0);
    }
    char exe[PATH_MAX];
    if (exe_dir(exe, sizeof exe) == 0) {
        if (same_dir(CNF_BUILD_BIN_DIR, exe)) {
            if (try_dir(CNF_SOURCE_FLOWS_DIR, strlen(CNF_SOURCE_FLOWS_DIR), file, buf, n,
                        searched, sizeof searched))
                return buf;
        } else {
            char dir[PATH_MAX + 64];
            snprintf(dir, sizeof dir, "%s/%s", exe, CNF_FLOWS_FROM_BIN);
            if (try_dir(dir, strlen(dir), file, buf, n, searched, sizeof searched))
                return buf;
        }
    }
    cli_die("--flow %s: no preset %s (searched %s%s); give a path to a preset file or set "
            "CNF_FLOWS_PATH", name, file, searched[0] ? searched : "nowhere",
            env ? "" : "; CNF_FLOWS_PATH is not set");
}

/* fuzz_file.c — see fuzz_file.h. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[512];
static int fd = -1;

static void remove_file(void)
{
    if (fd >= 0)
        unlink(path);
}

const char *fuzz_file(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        const char *dir = getenv("CNF_FUZZ_TMPDIR");
        if (!dir)
            dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/cnf-fuzz-XXXXXX", dir ? dir : "/tmp");
        fd = mkstemp(path);
        if (fd < 0)
            abort();
        atexit(remove_file);
    }
    if (ftruncate(fd, 0) != 0)
        abort();
    for (size_t done = 0; done < size;) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0)
            abort();
        done += (size_t)w;
    }
    return path;
}

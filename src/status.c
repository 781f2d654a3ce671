/* status.c — status codes and the thread-local last-error message.
 *
 * A library must not print or exit, yet a bare code cannot say which file or
 * option was wrong; so each failure leaves a message behind, per thread, as
 * errno plus strerror would if strerror could name the culprit. */
#include "cnf/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_message[1024];

const char *cnf_strerror(cnf_status status)
{
    switch (status) {
    case CNF_OK: return "success";
    case CNF_EINVAL: return "invalid argument";
    case CNF_ENOMEM: return "out of memory";
    case CNF_EIO: return "input/output error";
    case CNF_EFORMAT: return "unrecognised file format or version";
    case CNF_EDIM: return "dimension mismatch";
    case CNF_EDATA: return "unusable data";
    case CNF_ESTEP_UNDERFLOW: return "ODE step size underflow";
    case CNF_EMAX_STEPS: return "ODE step limit reached";
    case CNF_ENONFINITE: return "ODE state is not finite";
    case CNF_ERHS: return "right-hand side failed";
    case CNF_ENOTIMPL: return "not available in this build";
    case CNF_EINTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

const char *cnf_last_error(void)
{
    return last_message;
}

cnf_status cnf_error(cnf_status status, const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers often wrap the previous
     * message ("%s: ...", cnf_last_error()), which must not be overwritten
     * while it is being read. */
    char message[sizeof last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    memcpy(last_message, message, sizeof last_message);
    return status;
}

void cnf_clear_error(void)
{
    last_message[0] = '\0';
}

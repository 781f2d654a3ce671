/* cnf/status.h — status codes and error messages shared by every module.
 *
 * Every library function that can fail returns a cnf_status. CNF_OK is 0;
 * errors are positive codes. On failure the library also records a message
 * naming the file, dataset, option or value at fault; read it with
 * cnf_last_error() (thread-local, valid until the next failing call on the
 * same thread). The library never prints and never exits: only tools/ turns a
 * status into a message on stderr and an exit code.
 *
 * Typical use:
 *
 *     cnf_status s = cnf_flow_log_likelihood(flow, work, X, N, rng, loglik, NULL);
 *     if (s != CNF_OK) {
 *         fprintf(stderr, "cnf: %s\n", cnf_last_error());
 *         return 1;
 *     }
 */
#ifndef CNF_STATUS_H
#define CNF_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_OK = 0,
    CNF_EINVAL,        /* an argument or option is invalid */
    CNF_ENOMEM,        /* out of memory */
    CNF_EIO,           /* a file could not be read or written */
    CNF_EFORMAT,       /* a file is not in the expected format or version */
    CNF_EDIM,          /* dimensions or shapes do not agree */
    CNF_EDATA,         /* the data contain NaN/Inf or are otherwise unusable */
    CNF_ESTEP_UNDERFLOW, /* the ODE step size fell below its minimum */
    CNF_EMAX_STEPS,    /* the ODE solve reached its step limit */
    CNF_ENONFINITE,    /* the ODE state stayed non-finite after retries */
    CNF_ERHS,          /* the right-hand side reported a fatal error */
    CNF_ENOTIMPL,      /* a feature is not available in this build */
    CNF_EINTERRUPTED   /* a callback asked to stop */
} cnf_status;

/* A short constant description of a status code ("step size underflow"). */
const char *cnf_strerror(cnf_status status);

/* The message of the last failure on this thread, or "" if none. Borrowed. */
const char *cnf_last_error(void);

/* Record a failure message (printf-style) and return `status`, so that a
 * library function can write `return cnf_error(CNF_EIO, "cannot open %s", f);`.
 * The message is prefixed with nothing; make it name what is at fault. The
 * previous message may be among the arguments, to wrap an inner failure:
 * `cnf_error(s, "block %zu: %s", k, cnf_last_error())` (it is formatted
 * before it is replaced). */
cnf_status cnf_error(cnf_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Forget the last message (used by callers that recover from a failure). */
void cnf_clear_error(void);

#ifdef __cplusplus
}
#endif

#endif /* CNF_STATUS_H */

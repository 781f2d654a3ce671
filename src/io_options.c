/* io_options.c — the solver settings a model's training record holds, as
 * flow options (cnf_flow_options_from_model in cnf/io.h). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cnf/io.h"

/* A positive finite number, all of text; 0 on success. */
static int parse_positive(const char *text, double *x)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v) || v <= 0)
        return -1;
    *x = v;
    return 0;
}

/* A count >= 1, all of text; 0 on success. */
static int parse_count(const char *text, size_t *n)
{
    char *end;
    errno = 0;
    if (text[0] == '-')
        return -1;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end || errno || v < 1 || v > (unsigned long long)SIZE_MAX)
        return -1;
    *n = (size_t)v;
    return 0;
}

cnf_status cnf_flow_options_from_model(const cnf_model_extra *extra, cnf_flow_options *opt)
{
    cnf_flow_options_default(opt);
    if (!extra)
        return CNF_OK;
    cnf_status status = CNF_OK;
    const char *v, *bad = NULL, *bad_key = NULL;
    if ((v = cnf_model_extra_get(extra, "solver"))
        && cnf_ode_method_from_name(v, &opt->solver.method) != CNF_OK)
        bad = v, bad_key = "solver";
    if ((v = cnf_model_extra_get(extra, "rtol")) && parse_positive(v, &opt->solver.rtol)
        && !bad)
        bad = v, bad_key = "rtol";
    if ((v = cnf_model_extra_get(extra, "atol")) && parse_positive(v, &opt->solver.atol)
        && !bad)
        bad = v, bad_key = "atol";
    if ((v = cnf_model_extra_get(extra, "max_steps"))
        && parse_count(v, &opt->solver.max_steps) && !bad)
        bad = v, bad_key = "max_steps";
    if (bad)
        status = cnf_error(CNF_EFORMAT,
                           "the model's training record has %s = '%s', which is not a valid "
                           "value; the default is used for it",
                           bad_key, bad);
    opt->adjoint.solver = opt->solver;
    return status;
}

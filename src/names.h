/* names.h — the names of the library's enumerations (private to libcnf).
 *
 * Each public enumeration with values 0 .. n-1 has a name function and a
 * from_name function over one static table of names; CNF_ENUM_NAMES
 * defines both, so that the lookup and the message that lists the valid
 * names are written once for all of them:
 *
 *     static const char *const act_names[] = {"tanh", "softplus", "elu", "swish"};
 *     CNF_ENUM_NAMES(cnf_activation, cnf_activation_name, cnf_activation_from_name,
 *                    "activation", act_names)
 */
#ifndef CNF_NAMES_H
#define CNF_NAMES_H

#include "cnf/status.h"

/* names[value], or "unknown" outside 0 .. n-1. */
const char *cnf_enum_name(const char *const *names, int n, int value);

/* The index of name in names[0 .. n); -1 (also for a NULL name) with
 * CNF_EINVAL "unknown <what> '<name>' (valid: <the names>)" set. */
int cnf_enum_lookup(const char *const *names, int n, const char *what, const char *name);

#define CNF_ENUM_COUNT(names) ((int)(sizeof(names) / sizeof((names)[0])))

/* Defines name_fn(type) -> const char * and
 * from_name_fn(const char *, type *) -> CNF_OK or CNF_EINVAL. */
#define CNF_ENUM_NAMES(type, name_fn, from_name_fn, what, names)                               \
    const char *name_fn(type value)                                                            \
    {                                                                                          \
        return cnf_enum_name(names, CNF_ENUM_COUNT(names), (int)value);                        \
    }                                                                                          \
    cnf_status from_name_fn(const char *name, type *value)                                     \
    {                                                                                          \
        int i = cnf_enum_lookup(names, CNF_ENUM_COUNT(names), what, name);                     \
        if (i < 0)                                                                             \
            return CNF_EINVAL;                                                                 \
        *value = (type)i;                                                                      \
        return CNF_OK;                                                                         \
    }

#endif /* CNF_NAMES_H */

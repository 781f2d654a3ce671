/* names.c — enumeration names and their lookup (names.h). */
#include "names.h"

#include <string.h>

const char *cnf_enum_name(const char *const *names, int n, int value)
{
    return value >= 0 && value < n ? names[value] : "unknown";
}

int cnf_enum_lookup(const char *const *names, int n, const char *what, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    char valid[256] = "";
    for (int i = 0; i < n; i++) {
        if (i > 0)
            strncat(valid, ", ", sizeof valid - strlen(valid) - 1);
        strncat(valid, names[i], sizeof valid - strlen(valid) - 1);
    }
    cnf_error(CNF_EINVAL, "unknown %s '%s' (valid: %s)", what, name ? name : "(null)", valid);
    return -1;
}

/* presets.h — finding a preset of `cnf train --flow` by name.
 *
 * --flow takes a path to a preset file or a bare name ("toy2d" or
 * "toy2d.cfg"). A bare name is looked up, first match wins, in
 *   1. the path itself, when a file of that name exists;
 *   2. each directory of $CNF_FLOWS_PATH (colon-separated), in order;
 *   3. the source tree's flows/, for a `cnf` that runs from its build tree;
 *   4. <prefix>/share/cnf/flows, found relative to the executable
 *      (/proc/self/exe), for an installed `cnf`.
 * A name without ".cfg" gets it appended. A name containing '/' is a path
 * only (step 1). */
#ifndef CNF_TOOLS_PRESETS_H
#define CNF_TOOLS_PRESETS_H

#include <stddef.h>

/* The file to read for --flow name, in buf (n bytes); exits with a message
 * listing every place searched when there is none. */
const char *cli_preset_find(const char *name, char *buf, size_t n);

#endif /* CNF_TOOLS_PRESETS_H */

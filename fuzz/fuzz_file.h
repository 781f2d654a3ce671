/* fuzz_file.h — the fuzzers' input as a file: the HDF5 readers take a path,
 * so each input is written to one private file in $CNF_FUZZ_TMPDIR (else
 * /dev/shm, else $TMPDIR), rewritten in place for every run. */
#ifndef CNF_FUZZ_FILE_H
#define CNF_FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>

/* The path holding data[0..size) after the call; aborts if it cannot be
 * written (a broken fuzzing set-up, not a finding). */
const char *fuzz_file(const uint8_t *data, size_t size);

#endif

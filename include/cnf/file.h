/* cnf/file.h — the rules every file of cnf goes through: what may be read,
 * what may be written, and how an output replaces what was there.
 *
 * Inputs. An input must be a regular file (after following symbolic links).
 * A directory, a device (/dev/zero), a FIFO or a socket is refused by name,
 * before anything opens it for reading: a FIFO would block until a writer
 * came, a device could be read for ever. cnf_file_check_input is what the
 * HDF5 readers (cnf/data.h, cnf/io.h) call; cnf_file_open_input gives a
 * stdio stream for text inputs (presets, CSV).
 *
 * Outputs. An output path may name nothing yet, a regular file, or a
 * symbolic link to a regular file; a symbolic link is written through on
 * purpose: the file it points to is replaced and the link is kept (as an
 * editor saves through a link). Refused, with CNF_EIO and a message naming
 * the path: a directory, a device, a FIFO, a socket, a link to one of those,
 * a dangling link, a missing or unwritable directory, and an output that is
 * one of the command's inputs. "Is one of the inputs" compares devices and
 * inode numbers, so another spelling, a hard link or a symbolic link of an
 * input is caught as well as its own name.
 *
 * Atomic replacement (cnf_file_out). An output is written to a temporary
 * file in the directory of the file it replaces and renamed over it only
 * when complete (rename(2) is atomic within a file system), so an error,
 * a full disk or a kill never leaves a partial file and never changes an
 * existing one. The commit flushes the data (fsync) before the rename, so
 * that after a crash the name holds the old file or the whole new one; the
 * directory is not flushed (either file is complete, and a save every
 * iteration would pay a second fsync each time). The new file gets the
 * permission bits (and, where the process may, the owner and group) of
 * the file it replaces; a new output gets 0666 less the umask, as any
 * created file. Another hard link to the replaced file keeps the old
 * contents (rename replaces a name).
 *
 * Temporary files are named
 *
 *     <name>.cnf-tmp.<pid>.<n>          e.g.  model.h5.cnf-tmp.4242.0
 *
 * in the target's directory (<pid> the writing process, <n> a process-wide
 * counter so that threads never share one). When <name> is too long for
 * that to fit the directory's NAME_MAX, <name> is cut (at a UTF-8 character
 * boundary) and "~" with eight hex digits of a hash of the whole name is
 * appended, so that every valid file name can be written and the leftovers
 * of different long names stay apart. Leftovers can exist only when a
 * process was killed by a signal it could not handle (SIGKILL, a crash) or
 * the machine stopped:
 * every error path removes its temporary, and a program that calls
 * cnf_file_remove_temporaries from its SIGINT/SIGTERM handlers (as the cnf
 * command does) removes them on those signals too. Each cnf_file_out_open
 * removes the leftovers of the same output whose process no longer runs on
 * this machine (checked with kill(pid, 0)), including those of earlier
 * versions of cnf, which named them "<name>.tmp.<pid>[.<n>]"; a temporary
 * of a process that is still running is never touched.
 *
 * Errors: CNF_EINVAL (an empty name), CNF_ENOMEM, CNF_EIO (everything else;
 * the message names the path and the reason, e.g. "No space left on
 * device").
 *
 * Typical calls:
 *
 *     const char *inputs[] = {model_path, data_file};
 *     if (cnf_file_check_output(out, inputs, 2) != CNF_OK) ... // before any work
 *     ...
 *     cnf_file_out *o = cnf_file_out_open(out);             // NULL: see message
 *     cnf_status s = o ? cnf_file_out_write(o, bytes, n) : CNF_EIO;
 *     if (s == CNF_OK) s = cnf_file_out_commit(o);           // frees o
 *     else cnf_file_out_abort(o);                            // frees o
 *
 *     FILE *f;
 *     if (cnf_file_open_input("preset.cfg", &f) != CNF_OK) ... cnf_last_error();
 */
#ifndef CNF_FILE_H
#define CNF_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CNF_OK if path is a regular file (after symbolic links) that this
 * process can open for reading; CNF_EIO otherwise, e.g. "cannot open 'x':
 * No such file or directory", "cannot open 'd': it is a directory",
 * "cannot open 'p': it is a FIFO (named pipe), not a regular file". */
cnf_status cnf_file_check_input(const char *path);

/* cnf_file_check_input, then open path for reading as a stdio stream
 * (*f, owned by the caller: fclose). *f is NULL on failure. Never blocks on
 * a FIFO or a device: they are refused before they are opened. */
cnf_status cnf_file_open_input(const char *path, FILE **f);

/* CNF_OK if path may be written as an output (see the top of this header)
 * given the command's inputs: n_inputs file names, of which NULL entries
 * and names that do not exist are skipped (their own reading reports them).
 * Call it before any work, so that a refused output costs nothing. */
cnf_status cnf_file_check_output(const char *path, const char *const *inputs,
                                 size_t n_inputs);

/* ---- Atomic replacement --------------------------------------------------- */

typedef struct cnf_file_out cnf_file_out;

/* Check path (cnf_file_check_output without inputs), remove the stale
 * temporaries of the file it would replace, and create a new temporary
 * file for it (empty, opened for writing). NULL on failure, with the
 * message; nothing is created then. */
cnf_file_out *cnf_file_out_open(const char *path);

/* The output's name as given to _open, and the temporary file's (both
 * borrowed, valid until commit or abort). */
const char *cnf_file_out_path(const cnf_file_out *o);
const char *cnf_file_out_temp_path(const cnf_file_out *o);

/* Append n bytes to the temporary file (retrying short writes). On failure
 * (CNF_EIO naming the output and errno's reason) the output is marked
 * failed: later writes and the commit refuse (CNF_EIO). */
cnf_status cnf_file_out_write(cnf_file_out *o, const void *bytes, size_t n);

/* Flush the temporary file to disk, give it the replaced file's permission
 * bits (and owner and group where allowed) and rename it over the target.
 * Always frees o. On failure the temporary file is
 * removed, the target is untouched and the status says why. */
cnf_status cnf_file_out_commit(cnf_file_out *o);

/* Close and remove the temporary file, leaving the target untouched. Frees
 * o; NULL is fine. Keeps the last error message. */
void cnf_file_out_abort(cnf_file_out *o);

/* Remove the temporary files of every cnf_file_out of this process that is
 * neither committed nor aborted. Async-signal-safe (only unlink(2) on names
 * built before), for a program's SIGINT/SIGTERM handlers, which should then
 * end the process (the writers' state is not repaired); call it from the
 * thread that writes, or with the writers' threads blocking the signal (as
 * libcnf's own worker threads do), since another thread might free a name
 * while the handler reads it. At most CNF_FILE_MAX_PENDING temporaries at
 * once are known to it; more are still written correctly, and a leftover
 * of theirs is removed by the next write of the same output. */
void cnf_file_remove_temporaries(void);
#define CNF_FILE_MAX_PENDING 64

#ifdef __cplusplus
}
#endif

#endif /* CNF_FILE_H */

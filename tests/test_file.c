/* test_file.c — cnf/file.h: inputs must be regular files, an output may not
 * be an input (by device and inode) nor anything but a regular file or a
 * link to one, the atomic replacement keeps the replaced file's mode, fits
 * every valid name, removes stale temporaries of dead processes only, and
 * its temporaries can be removed from a signal handler. */
#define _XOPEN_SOURCE 700

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cnf/file.h"
#include "cnf/io.h"
#include "testutil.h"

static char dir[256];

static void setup(void)
{
    tu_tmpdir_make(dir, sizeof dir, "cnf_test_file");
}

static void teardown(void)
{
    tu_tmpdir_remove(dir);
}

static const char *at(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static int n_entries(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

START_TEST(test_inputs_must_be_regular)
{
    char p[512], q[512];
    put(at(p, sizeof p, "a.txt"), "x\n");
    ck_assert_int_eq(cnf_file_check_input(p), CNF_OK);
    ck_assert_int_eq(cnf_file_check_input(dir), CNF_EIO);
    ck_assert_msg(strstr(cnf_last_error(), "is a directory"), "%s", cnf_last_error());
    ck_assert_int_eq(cnf_file_check_input("/dev/null"), CNF_EIO);
    ck_assert_msg(strstr(cnf_last_error(), "character device"), "%s", cnf_last_error());
    ck_assert_int_eq(cnf_file_check_input(at(q, sizeof q, "missing")), CNF_EIO);
    ck_assert_int_eq(mkfifo(at(q, sizeof q, "fifo"), 0600), 0);
    FILE *f = (FILE *)1;
    /* returns at once (no writer ever comes) */
    ck_assert_int_eq(cnf_file_open_input(q, &f), CNF_EIO);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(cnf_last_error(), "FIFO"), "%s", cnf_last_error());
    /* a link to a regular file is read */
    ck_assert_int_eq(symlink(p, at(q, sizeof q, "link")), 0);
    ck_assert_int_eq(cnf_file_open_input(q, &f), CNF_OK);
    ck_assert_int_eq(fgetc(f), 'x');
    fclose(f);
}
END_TEST

START_TEST(test_output_is_not_an_input)
{
    char in[512], out[512], other[512];
    put(at(in, sizeof in, "in.h5"), "data\n");
    const char *inputs[] = {NULL, "no-such-file", in};
    ck_assert_int_eq(cnf_file_check_output(in, inputs, 3), CNF_EIO);
    ck_assert_msg(strstr(cnf_last_error(), "the same file"), "%s", cnf_last_error());
    ck_assert_int_eq(link(in, at(out, sizeof out, "hard.h5")), 0);
    ck_assert_int_eq(cnf_file_check_output(out, inputs, 3), CNF_EIO);
    ck_assert_int_eq(symlink(in, at(out, sizeof out, "soft.h5")), 0);
    ck_assert_int_eq(cnf_file_check_output(out, inputs, 3), CNF_EIO);
    /* only the inputs given count */
    ck_assert_int_eq(cnf_file_check_output(out, inputs, 2), CNF_OK);
    put(at(other, sizeof other, "other.h5"), "x\n");
    ck_assert_int_eq(cnf_file_check_output(other, inputs, 3), CNF_OK);
    ck_assert_int_eq(cnf_file_check_output(at(out, sizeof out, "new.h5"), inputs, 3), CNF_OK);
    /* not regular: refused with or without inputs */
    ck_assert_int_eq(cnf_file_check_output("/dev/null", NULL, 0), CNF_EIO);
    ck_assert_int_eq(symlink("/dev/null", at(out, sizeof out, "null.h5")), 0);
    ck_assert_int_eq(cnf_file_check_output(out, NULL, 0), CNF_EIO);
    ck_assert_ptr_null(cnf_file_out_open(out));
    ck_assert_int_eq(symlink("gone.h5", at(out, sizeof out, "dangling.h5")), 0);
    ck_assert_int_eq(cnf_file_check_output(out, NULL, 0), CNF_EIO);
    ck_assert_msg(strstr(cnf_last_error(), "missing file"), "%s", cnf_last_error());
}
END_TEST

static void write_text(const char *path, const char *text)
{
    cnf_file_out *o = cnf_file_out_open(path);
    ck_assert_msg(o != NULL, "%s", cnf_last_error());
    ck_assert_int_eq(cnf_file_out_write(o, text, strlen(text)), CNF_OK);
    ck_assert_int_eq(cnf_file_out_commit(o), CNF_OK);
}

static void expect_text(const char *path, const char *text)
{
    char buf[256] = "";
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_str_eq(buf, text);
}

START_TEST(test_replace_keeps_mode_and_writes_through_links)
{
    char p[512], l[512];
    at(p, sizeof p, "m.h5");
    put(p, "old\n");
    ck_assert_int_eq(chmod(p, 0600), 0);
    write_text(p, "new\n");
    expect_text(p, "new\n");
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    /* through a link: the link stays, its file is replaced with its mode */
    ck_assert_int_eq(chmod(p, 0640), 0);
    ck_assert_int_eq(symlink("m.h5", at(l, sizeof l, "link.h5")), 0);
    write_text(l, "through\n");
    ck_assert_int_eq(lstat(l, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    expect_text(p, "through\n");
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    ck_assert_int_eq(n_entries(), 2);
    /* an abort changes nothing */
    cnf_file_out *o = cnf_file_out_open(p);
    ck_assert_int_eq(cnf_file_out_write(o, "x", 1), CNF_OK);
    ck_assert_int_eq(n_entries(), 3);
    cnf_file_out_abort(o);
    expect_text(p, "through\n");
    ck_assert_int_eq(n_entries(), 2);
    /* cnf_model_save goes the same way */
    gsl_rng *r = tu_rng(3);
    const double T[1] = {1.0};
    cnf_flow *flow = tu_flow(2, 1, "3", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, T, r);
    ck_assert_int_eq(cnf_model_save(l, flow, NULL), CNF_OK);
    ck_assert_int_eq(lstat(l, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    cnf_flow *back;
    ck_assert_int_eq(cnf_model_load(p, &back, NULL), CNF_OK);
    cnf_flow_free(back);
    cnf_flow_free(flow);
    gsl_rng_free(r);
}
END_TEST

START_TEST(test_long_names_fit)
{
    /* 255 bytes, the longest name; then 253 bytes of two-byte characters,
     * whose cut temporary name must stay valid UTF-8 */
    char name[256], p[600];
    memset(name, 'n', 252);
    strcpy(name + 252, ".h5");
    write_text(at(p, sizeof p, name), "long\n");
    expect_text(p, "long\n");
    char utf[256] = "";
    for (int i = 0; i < 125; i++)
        strcat(utf, "\xc3\xa9");
    strcat(utf, ".h5");
    cnf_file_out *o = cnf_file_out_open(at(p, sizeof p, utf));
    ck_assert_msg(o != NULL, "%s", cnf_last_error());
    const char *t = strrchr(cnf_file_out_temp_path(o), '/') + 1;
    ck_assert_uint_le(strlen(t), 255);
    const char *tilde = strchr(t, '~');
    ck_assert_ptr_nonnull(tilde);
    ck_assert_uint_eq((size_t)(tilde - t) % 2, 0);   /* whole two-byte characters */
    ck_assert_ptr_nonnull(strstr(tilde, ".cnf-tmp."));
    ck_assert_int_eq(cnf_file_out_commit(o), CNF_OK);
    ck_assert_int_eq(n_entries(), 2);
}
END_TEST

/* A pid that is not running: a child that has been reaped. */
static long dead_pid(void)
{
    pid_t c = fork();
    if (c == 0)
        _exit(0);
    waitpid(c, NULL, 0);
    return (long)c;
}

START_TEST(test_stale_temporaries)
{
    char p[512], t[600];
    at(p, sizeof p, "s.h5");
    long dead = dead_pid();
    char keep[3][600];
    snprintf(t, sizeof t, "%s.cnf-tmp.%ld.0", p, dead);
    put(t, "stale\n");
    snprintf(t, sizeof t, "%s.tmp.%ld.2", p, dead);   /* an earlier version's name */
    put(t, "stale\n");
    snprintf(keep[0], sizeof keep[0], "%s.cnf-tmp.%ld.0", p, (long)getppid());   /* running */
    snprintf(keep[1], sizeof keep[1], "%s/t.h5.cnf-tmp.%ld.0", dir, dead);   /* another output */
    snprintf(keep[2], sizeof keep[2], "%s.cnf-tmp.%ld.0x", p, dead);   /* not our pattern */
    for (int i = 0; i < 3; i++)
        put(keep[i], "keep\n");
    write_text(p, "fresh\n");
    ck_assert_int_eq(n_entries(), 4);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(access(keep[i], F_OK), 0);
}
END_TEST

static void on_term(int sig)
{
    (void)sig;
    cnf_file_remove_temporaries();
    _exit(42);
}

START_TEST(test_signal_handler_removes_temporaries)
{
    char p[512], q[512];
    at(p, sizeof p, "a.h5");
    at(q, sizeof q, "b.h5");
    pid_t c = fork();
    ck_assert_int_ge(c, 0);
    if (c == 0) {
        signal(SIGTERM, on_term);
        cnf_file_out *a = cnf_file_out_open(p), *b = cnf_file_out_open(q);
        cnf_file_out *done = cnf_file_out_open(p);
        if (!a || !b || !done || cnf_file_out_write(a, "x", 1) != CNF_OK ||
            cnf_file_out_commit(done) != CNF_OK)
            _exit(1);
        raise(SIGTERM);
        _exit(2);
    }
    int status;
    waitpid(c, &status, 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 42);
    /* the committed one stays, the two pending temporaries are gone */
    ck_assert_int_eq(n_entries(), 1);
    ck_assert_int_eq(access(p, F_OK), 0);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("file");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_inputs_must_be_regular);
    tcase_add_test(tc, test_output_is_not_an_input);
    tcase_add_test(tc, test_replace_keeps_mode_and_writes_through_links);
    tcase_add_test(tc, test_long_names_fit);
    tcase_add_test(tc, test_stale_temporaries);
    tcase_add_test(tc, test_signal_handler_removes_temporaries);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

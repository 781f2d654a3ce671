/* test_status.c — status codes and the last-error message. */
#include <string.h>

#include "cnf/status.h"
#include "testutil.h"

START_TEST(test_error_message_kept)
{
    cnf_clear_error();
    ck_assert_str_eq(cnf_last_error(), "");
    cnf_status s = cnf_error(CNF_EIO, "cannot open %s", "x.h5");
    ck_assert_int_eq(s, CNF_EIO);
    ck_assert_str_eq(cnf_last_error(), "cannot open x.h5");
    ck_assert_str_ne(cnf_strerror(CNF_EDIM), cnf_strerror(CNF_EDATA));
    ck_assert_str_eq(cnf_strerror(CNF_OK), "success");
}
END_TEST

START_TEST(test_error_wraps_previous_message)
{
    cnf_error(CNF_EIO, "cannot open %s", "x.h5");
    cnf_error(CNF_EFORMAT, "model m.h5: %s", cnf_last_error());
    ck_assert_str_eq(cnf_last_error(), "model m.h5: cannot open x.h5");
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_error_message_kept);
    tcase_add_test(tc, test_error_wraps_previous_message);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}

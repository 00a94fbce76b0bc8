/* The version: macros usable in #if, and the string the library was built as. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "llll.h"
#include "t.h"

#if !defined(LLLL_VERSION_NUMBER) || LLLL_VERSION_NUMBER < 0x000200
#error "LLLL_VERSION_NUMBER must be usable in #if, 0.2.0 or later"
#endif

START_TEST(version_number_packs_major_minor_patch_for_if)
{
    ck_assert_int_eq(LLLL_VERSION_NUMBER,
                     (LLLL_VERSION_MAJOR << 16) | (LLLL_VERSION_MINOR << 8) | LLLL_VERSION_PATCH);
    ck_assert_int_eq(LLLL_VERSION_MAJOR, 0);
    ck_assert_int_eq(LLLL_VERSION_MINOR, 2);
#if LLLL_VERSION_NUMBER == 0x000200
    ck_assert_int_eq(LLLL_VERSION_PATCH, 0);
#endif
}
END_TEST

START_TEST(version_string_matches_the_header_the_library_was_built_with)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", LLLL_VERSION_MAJOR, LLLL_VERSION_MINOR, LLLL_VERSION_PATCH);
    ck_assert_str_eq(llll_version(), want);
}
END_TEST

START_TEST(the_header_alone_gives_the_errno_names_it_returns)
{
    /* llll.h includes <errno.h>: this file includes nothing else of it. */
    ck_assert_int_gt(ETIMEDOUT, 0);
    ck_assert_int_lt(LLLL_EOF, -4095);
}
END_TEST

static Suite *version_suite(void)
{
    Suite *s = suite_create("version");
    TCase *tc = tcase_create("version");
    tcase_add_test(tc, version_number_packs_major_minor_patch_for_if);
    tcase_add_test(tc, version_string_matches_the_header_the_library_was_built_with);
    tcase_add_test(tc, the_header_alone_gives_the_errno_names_it_returns);
    suite_add_tcase(s, tc);
    return s;
}

T_SUITE(version_suite)

/* The version: macros usable in #if, and the string the library was built as. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "llll.h"
#include "t.h"

#if !defined(LLLL_VERSION_NUMBER) || LLLL_VERSION_NUMBER < 0x000200
#error "LLLL_VERSION_NUMBER must be usable in #if, 0.2.0 or later"
#endif

/* The values llll.h defines now, written out: 0.2.0 packs to
 * (0 << 16) | (2 << 8) | 0 = 0x000200. A new version changes them here too. */
START_TEST(version_number_packs_major_minor_patch_for_if)
{
    ck_assert_int_eq(LLLL_VERSION_MAJOR, 0);
    ck_assert_int_eq(LLLL_VERSION_MINOR, 2);
    ck_assert_int_eq(LLLL_VERSION_PATCH, 0);
    ck_assert_int_eq(LLLL_VERSION_NUMBER, 0x000200);
#if LLLL_VERSION_NUMBER != 0x000200
    ck_abort_msg("#if sees LLLL_VERSION_NUMBER as 0x%06x, not 0x000200", LLLL_VERSION_NUMBER);
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

/* That llll.h alone gives the errno names is checked when the tests are
 * built: t/header_alone.c includes nothing else and must compile. */
START_TEST(llll_eof_lies_below_every_errno_value)
{
    ck_assert_int_lt(LLLL_EOF, -4095);
}
END_TEST

static Suite *version_suite(void)
{
    Suite *s = suite_create("version");
    TCase *tc = tcase_create("version");
    tcase_add_test(tc, version_number_packs_major_minor_patch_for_if);
    tcase_add_test(tc, version_string_matches_the_header_the_library_was_built_with);
    tcase_add_test(tc, llll_eof_lies_below_every_errno_value);
    suite_add_tcase(s, tc);
    return s;
}

T_SUITE(version_suite)

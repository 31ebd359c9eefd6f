/* SPDX-License-Identifier: Apache-2.0 */
/* Failpoints for crash and fault tests: named points in the code where a test
 * can make the process crash, fail or pause, chosen at run time with
 *   BERTH_FAILPOINTS="content.commit.before_rename=crash;metadata.txn.mid=error"
 * Actions: crash (SIGKILL itself: a kill -9 at exactly that point), error (the
 * point returns -1 so the caller fails as on an I/O error), pause=MS (sleep),
 * and once:ACTION (only the first time in this process). Without the
 * variable every point costs one predictable branch. */
#pragma once

#include "berth/common.h"

/** Returns 0 to continue, or -1 when the failpoint says "error". Never
 * returns for "crash". */
int berth_failpoint(const char *name);

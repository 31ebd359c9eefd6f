/* SPDX-License-Identifier: Apache-2.0 */
/* Entry point of berth-snapshot-overlay-apply.so (see module.h). */
#include "module.h"

const overlay_apply_module_t overlay_apply_module = {
    .abi = OVERLAY_APPLY_ABI,
    .global_init = overlay_apply_global_init,
    .apply_snapshot = overlay_apply_snapshot,
};

/* SPDX-License-Identifier: Apache-2.0 */
/* The command groups. Each cmd_* is defined in its own cmd_<group>.c; groups
 * whose file is not built yet are weak and print "not available". */
#pragma once

#include "cli.h"

#define CLI_GROUPS(X)                                                                               \
    X(version, "version", "Print the client and server versions")                                  \
    X(info, "info", "Show daemon information")                                                     \
    X(plugins, "plugins|plugin", "List and manage plugins")                                         \
    X(events, "events|event", "Display events")                                                    \
    X(namespaces, "namespaces|namespace|ns", "Manage namespaces")                                   \
    X(content, "content", "Manage content")                                                        \
    X(leases, "leases|lease", "Manage leases")                                                     \
    X(images, "images|image|i", "Manage images")                                                   \
    X(snapshots, "snapshots|snapshot", "Manage snapshots")                                         \
    X(containers, "containers|container|c", "Manage containers")                                    \
    X(tasks, "tasks|task|t", "Manage tasks")                                                       \
    X(run, "run", "Run a container")                                                               \
    X(gc, "gc", "Run garbage collection")

#define X(fn, names, help) int cmd_##fn(int argc, char **argv) __attribute__((weak));
CLI_GROUPS(X)
#undef X

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# in_cgroup2.sh COMMAND [ARGS...]: runs COMMAND (exec, same pid) in a private
# mount namespace whose /sys/fs/cgroup is a cgroup2 file system: runc's
# "unified mode" (pure cgroup v2), here on a hybrid host whose controllers
# are all bound to v1 hierarchies, so the v2 hierarchy has none of them.
# Exits 1 with a message when the namespace or the mount cannot be made.
exec unshare -m --propagation private sh -c '
    mount -t cgroup2 cgroup2 /sys/fs/cgroup || {
        echo "in_cgroup2.sh: cannot mount cgroup2 on /sys/fs/cgroup" >&2; exit 1; }
    exec "$@"' in_cgroup2 "$@"

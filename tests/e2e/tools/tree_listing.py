#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Prints a canonical listing of a directory tree for comparisons: one line
per entry (sorted, the root itself excluded) with type, mode, owner, size,
content hash or link target, device numbers and user xattrs."""
import hashlib
import os
import stat
import sys


def line(root, rel):
    p = os.path.join(root, rel)
    st = os.lstat(p)
    m = st.st_mode
    kind = stat.S_IFMT(m)
    extra = ""
    if stat.S_ISREG(m):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        extra = "size=%d sha256=%s" % (st.st_size, h.hexdigest())
    elif stat.S_ISLNK(m):
        extra = "-> " + os.readlink(p)
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        extra = "dev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    try:
        xs = sorted(x for x in os.listxattr(p, follow_symlinks=False) if x.startswith("user."))
        for x in xs:
            extra += " %s=%s" % (x, os.getxattr(p, x, follow_symlinks=False).hex())
    except OSError:
        pass
    return "%s %o %o %d:%d %s" % (rel, kind >> 12, stat.S_IMODE(m), st.st_uid, st.st_gid, extra)


def main():
    root = sys.argv[1]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            out.append(line(root, rel))
    for l in sorted(out):
        print(l)


if __name__ == "__main__":
    main()

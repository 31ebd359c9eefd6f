#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Builds the hostile layer corpus for layer apply (tests/security/run_corpus.sh).
# Usage: make_hostile_layers.py OUTDIR CANARY
#   OUTDIR  gets one tar (or tar.gz/.zst) per case and cases.tsv
#   CANARY  an absolute host directory the layers try to reach
# cases.tsv columns: name, file, expect ("ok" or "error"), error substring
# (or "-"), extra berth-apply-test args (or "-"), post-check (a shell test run
# in the extraction root, or "-").
import gzip
import io
import os
import subprocess
import sys
import tarfile

out, canary = sys.argv[1], sys.argv[2].rstrip("/")
os.makedirs(out, exist_ok=True)
cases = []


def ti(name, typ=tarfile.REGTYPE, **kw):
    t = tarfile.TarInfo(name)
    t.type = typ
    t.mtime = 1600000000
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def layer(name, entries, expect="ok", err="-", args="-", check="-", fmt=tarfile.PAX_FORMAT,
          compress=None, raw_after=b""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            if isinstance(e, tuple):
                info, data = e
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(e)
    data = buf.getvalue() + raw_after
    fname = name + ".tar"
    if compress == "gzip":
        data = gzip.compress(data)
        fname += ".gz"
    with open(os.path.join(out, fname), "wb") as f:
        f.write(data)
    cases.append((name, fname, expect, err, args, check))


def f(name, data=b"pwned", mode=0o644, **kw):
    return (ti(name, mode=mode, **kw), data)


def sym(name, target, **kw):
    return ti(name, tarfile.SYMTYPE, linkname=target, **kw)


def hard(name, target, **kw):
    return ti(name, tarfile.LNKTYPE, linkname=target, **kw)


def d(name, mode=0o755, **kw):
    return ti(name, tarfile.DIRTYPE, mode=mode, **kw)


C = canary
inside = C.lstrip("/")  # where an absolute canary path lands when confined

# --- path escapes --------------------------------------------------------------
layer("dotdot-file", [f("../../../../../../" + inside + "/secret")], "error", "..")
layer("dotdot-middle", [d("a"), f("a/../../x")], "error", "..")
layer("absolute-path", [f(C + "/secret")], check=f"test -f '{inside}/secret'")
layer("gnu-longname-dotdot", [f("../" * 40 + inside + "/secret")], "error", "..",
      fmt=tarfile.GNU_FORMAT)

# --- symlink escapes ---------------------------------------------------------------
layer("symlink-abs-dir", [sym("evil", C), f("evil/secret", mode=0o777)],
      check=f"test -f '{inside}/secret' && test -L evil")
layer("symlink-rel-dir", [sym("evil", "../../../../../../../../" + inside),
                          f("evil/newfile")], check=f"test -f '{inside}/newfile'")
layer("symlink-chained", [sym("a", "b"), sym("b", "c/../../../../.."), d("c"),
                          f("a/" + inside + "/secret")], check=f"test -f '{inside}/secret'")
layer("symlink-loop", [sym("l1", "l2"), sym("l2", "l1"), f("l1/x")], "error", "l1/x")
layer("symlink-then-dir-entry", [sym("evil", C), d("evil/sub")],
      check=f"test -d '{inside}/sub'")
layer("file-replaces-dir-symlink", [sym("dl", C), f("dl", b"file now")],
      check="test -f dl && ! test -L dl")
layer("dir-replaced-by-symlink", [d("sw"), f("sw/a"), sym("sw", C), f("sw/secret", mode=0o777)],
      check=f"test -L sw && test -f '{inside}/secret'")
layer("root-dot-symlink", [sym(".", C), f("secret")], check="test -d . && test -f secret")
layer("root-slash-symlink", [sym("/", C), f("secret")], check="test -f secret")
layer("root-dot-slash-dir", [d("./", mode=0o777, uid=1234)],
      check="test $(stat -c %a .) = 755")

# --- hardlink escapes (CVE-2021-32760 class: chmod/chown through a link) ------------
layer("hardlink-abs-host", [hard("h", C + "/secret")], "error", "not found")
layer("hardlink-dotdot", [hard("h", "../../../../" + inside + "/secret")], "error", "..")
layer("hardlink-via-symlink-dir", [sym("s", C), hard("h", "s/secret")], "error", "not found")
layer("hardlink-to-symlink-chmod", [sym("s", C + "/secret"), hard("h", "s", mode=0o777)],
      check="test -L h")
layer("hardlink-chmod-then-file", [sym("s", C + "/secret"), hard("h", "s"),
                                   f("h", b"x", mode=0o4777)],
      check="test -f h && test -L s")
layer("hardlink-to-dir", [d("dir"), hard("h", "dir")], "error", "h")

# --- whiteout abuse ---------------------------------------------------------------
layer("whiteout-dot", [d("a"), f("a/.wh..", b"")], "error", "whiteout")
layer("whiteout-dotdot", [d("a"), f("a/.wh...", b"")], "error", "whiteout")
layer("whiteout-empty", [f(".wh.", b"")], "error", "whiteout")
layer("whiteout-dotdot-path", [f("../.wh.secret", b"")], "error", "..")
layer("whiteout-through-symlink", [sym("evil", C), f("evil/.wh.secret", b"")],
      check=f"test -c '{inside}/secret'")
layer("opaque-through-symlink", [sym("evil", C), f("evil/.wh..wh..opq", b"")],
      check=f"getfattr -n trusted.overlay.opaque '{inside}' >/dev/null 2>&1 || "
            f"python3 -c \"import os;os.getxattr('{inside}','trusted.overlay.opaque')\"")
layer("overlay-xattr-forged",
      [(ti("x", mode=0o644, pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y",
                                         "SCHILY.xattr.trusted.overlay.redirect": "/etc"}), b"x"),
       (ti("d2", tarfile.DIRTYPE, mode=0o755,
           pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y"}), b"")],
      check="! python3 -c \"import os;os.getxattr('d2','trusted.overlay.opaque')\" 2>/dev/null")

# --- devices, modes, capabilities ----------------------------------------------------
layer("device-major-out-of-range",
      [(ti("dev/bad", tarfile.CHRTYPE, mode=0o600,
           pax_headers={"SCHILY.devmajor": "4096", "SCHILY.devminor": "1"}), b"")],
      "error", "out of range")
layer("device-nodes", [ti("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660),
                       ti("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o640),
                       ti("fifo", tarfile.FIFOTYPE, mode=0o600)],
      check="test -b dev/sda && test -c dev/mem && test -p fifo")
cap = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12
layer("setuid-with-caps",
      [(ti("bin/x", mode=0o4755, uid=0, gid=0,
           pax_headers={"SCHILY.xattr.security.capability": cap}), b"x")],
      check="test -u bin/x && python3 -c \"import os;os.getxattr('bin/x','security.capability')\"")
layer("uid-minus-one", [(ti("u", mode=0o644, pax_headers={"uid": "4294967295"}), b"x")],
      "error", "owner")

# --- malformed and huge streams ---------------------------------------------------------
big = ti("huge", mode=0o644)
big.size = 8 << 30
buf = io.BytesIO()
buf.write(big.tobuf(tarfile.PAX_FORMAT))
buf.write(b"x" * 4096)  # claims 8 GiB, ends after 4 KiB
with open(os.path.join(out, "huge-truncated.tar"), "wb") as fh:
    fh.write(buf.getvalue())
cases.append(("huge-truncated", "huge-truncated.tar", "error", "truncated", "-", "-"))
with open(os.path.join(out, "garbage.tar"), "wb") as fh:
    fh.write(os.urandom(8192))
cases.append(("not-a-tar", "garbage.tar", "error", "tar", "-", "-"))
layer("truncated-gzip-src", [f("a", b"a" * 100000)], compress="gzip")
src = os.path.join(out, "truncated-gzip-src.tar.gz")
data = open(src, "rb").read()
with open(os.path.join(out, "truncated.tar.gz"), "wb") as fh:
    fh.write(data[: len(data) // 2])
cases.append(("truncated-gzip", "truncated.tar.gz", "error", "truncated", "-", "-"))
cases.pop(-2)  # the source itself is not a case
os.unlink(src)
# 256 MiB of zeros compress to ~250 KiB; the cap is 16 MiB.
bomb = os.path.join(out, "bomb.tar.gz")
with gzip.open(bomb, "wb", compresslevel=9) as g:
    hdr = ti("zeros", mode=0o644)
    hdr.size = 256 << 20
    g.write(hdr.tobuf(tarfile.PAX_FORMAT))
    z = b"\0" * (1 << 20)
    for _ in range(256):
        g.write(z)
    g.write(b"\0" * 1024)
cases.append(("decompression-bomb", "bomb.tar.gz", "error", "decompression bomb",
              "--max-size 16777216", "-"))
layer("wrong-diff-id", [f("a", b"a")], "error", "diff ID mismatch",
      "--expect sha256:" + "0" * 64)
layer("trailing-bytes-after-eof", [f("a", b"a")], raw_after=os.urandom(3000))

# --- long names --------------------------------------------------------------------------
deep = "/".join(["level_%03d" % i for i in range(600)])  # ~6 KiB, > PATH_MAX
layer("pax-path-over-path-max", [f(deep + "/leaf", b"deep")],
      check="test $(find . -name leaf | wc -l) = 1")
layer("pax-long-path-through-symlink",
      [sym("esc", C), f("esc/" + "/".join(["s%03d" % i for i in range(900)]) + "/secret")],
      check=f"test -d '{inside}/s000'")
layer("name-too-long", [f("n" * 300)], "error", "long")

with open(os.path.join(out, "cases.tsv"), "w") as fh:
    for c in cases:
        fh.write("\t".join(c) + "\n")
print(len(cases))

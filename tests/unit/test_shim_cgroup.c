/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the shim's cgroup code (plugins/runtime-runc/shim/cgroup.c)
 * on fixtures, so that cgroup v2 is covered on this v1/hybrid host: finding
 * the cgroup directory from /proc/<pid>/cgroup and mountinfo texts (pure
 * v2, hybrid, v1 with shared hierarchies, sub-cgroup mounts, cgroup
 * namespaces), v1 and v2 statistics from directories of files written as
 * the kernel writes them ("max", missing memory.peak), OOM kill detection
 * from memory.events through inotify, the "cgroup_paths" of runc's
 * state.json (v1, hybrid, v2) and the removal of a cgroup with its
 * children. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgroup.h"

static char tmp[256];

static int setup(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/berth-test-cgroup-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    (void)state;
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
    (void)state;
    return 0;
}

/* tmp/<rel>, with its parents. */
static void mkdirs(const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    for (char *s = p + strlen(tmp) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", p, strerror(errno));
}

/* Writes tmp/<dir>/<file> (truncating: the kernel rewrites the whole file). */
static void put(const char *dir, const char *file, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s/%s", tmp, dir, file);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        fail_msg("open %s: %s", p, strerror(errno));
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static const char *in_tmp(const char *rel)
{
    static char p[4][PATH_MAX];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof(p[k]), "%s/%s", tmp, rel);
    return p[k];
}

static bool exists(const char *rel)
{
    struct stat st;
    return lstat(in_tmp(rel), &st) == 0;
}

/* ---- texts as the kernel writes them ---------------------------------------------- */

/* A pure v2 host (systemd, cgroupfs driver under /berth). */
static const char v2_cgroup[] = "0::/berth/default/c1\n";
static const char v2_mountinfo[] =
    "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
    "23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n"
    "26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "30 22 0:26 / /run rw,nosuid,nodev shared:9 - tmpfs tmpfs rw,mode=755\n";

/* This host: hybrid, cpu and cpuacct on separate hierarchies, the unified
 * one at /sys/fs/cgroup/unified. */
static const char hy_cgroup[] = "9:name=systemd:/berth/default/c1\n"
                                "8:pids:/berth/default/c1\n"
                                "7:blkio:/berth/default/c1\n"
                                "4:memory:/berth/default/c1\n"
                                "3:cpuset:/berth/default/c1\n"
                                "2:cpuacct:/berth/default/c1\n"
                                "1:cpu:/berth/default/c1\n"
                                "0::/berth/default/c1\n";
static const char hy_mountinfo[] =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

static void assert_dir(const char *cg, const char *mi, const char *ctrl, const char *want)
{
    char out[PATH_MAX];
    int r = shim_cgroup_dir_from(cg, mi, ctrl, out, sizeof(out));
    if (!want) {
        if (r == 0)
            fail_msg("%s: expected no directory, got %s", ctrl ? ctrl : "unified", out);
        return;
    }
    if (r != 0)
        fail_msg("%s: expected %s, got none", ctrl ? ctrl : "unified", want);
    assert_string_equal(out, want);
}

static void test_dir_pure_v2(void **state)
{
    (void)state;
    assert_dir(v2_cgroup, v2_mountinfo, NULL, "/sys/fs/cgroup/berth/default/c1");
    /* No v1 controller: stats and OOM use v2. */
    assert_dir(v2_cgroup, v2_mountinfo, "memory", NULL);
    assert_dir(v2_cgroup, v2_mountinfo, "pids", NULL);
    /* The root cgroup is the mount point itself. */
    assert_dir("0::/\n", v2_mountinfo, NULL, "/sys/fs/cgroup");
    /* Not mounted. */
    assert_dir(v2_cgroup, "22 1 259:1 / / rw - ext4 /dev/root rw\n", NULL, NULL);
    assert_dir("", v2_mountinfo, NULL, NULL);
}

static void test_dir_hybrid(void **state)
{
    (void)state;
    assert_dir(hy_cgroup, hy_mountinfo, "memory", "/sys/fs/cgroup/memory/berth/default/c1");
    assert_dir(hy_cgroup, hy_mountinfo, "cpuacct", "/sys/fs/cgroup/cpuacct/berth/default/c1");
    assert_dir(hy_cgroup, hy_mountinfo, "pids", "/sys/fs/cgroup/pids/berth/default/c1");
    assert_dir(hy_cgroup, hy_mountinfo, NULL, "/sys/fs/cgroup/unified/berth/default/c1");
    assert_dir(hy_cgroup, hy_mountinfo, "hugetlb", NULL);
    /* The v1 "name=systemd" line is not the unified one. */
    assert_dir("1:name=systemd:/x\n", hy_mountinfo, NULL, NULL);
    /* cgroup2 mounted over /sys/fs/cgroup afterwards: every hierarchy
     * below it is hidden; the unified cgroup is found on the top mount. */
    char over[sizeof(hy_mountinfo) + 128];
    snprintf(over, sizeof(over), "%s%s", hy_mountinfo,
             "90 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n");
    assert_dir(hy_cgroup, over, "memory", NULL);
    assert_dir(hy_cgroup, over, "pids", NULL);
    assert_dir(hy_cgroup, over, NULL, "/sys/fs/cgroup/berth/default/c1");
    /* A later mount beside (not above) a hierarchy hides nothing, nor does
     * a later "/" or a longer name sharing a prefix. */
    snprintf(over, sizeof(over), "%s%s", hy_mountinfo,
             "91 31 0:50 / /sys/fs/cgroup/memory2 rw - tmpfs tmpfs rw\n"
             "92 1 0:51 / / rw - ext4 /dev/root rw\n");
    assert_dir(hy_cgroup, over, "memory", "/sys/fs/cgroup/memory/berth/default/c1");
}

static void test_dir_shared_hierarchy(void **state)
{
    (void)state;
    /* systemd's v1 layout: cpu,cpuacct share a hierarchy; "cpu" must not
     * match cpuset nor "cpuacct" match "cpu". */
    const char cg[] = "5:cpuset:/a\n4:cpu,cpuacct:/berth/default/c1\n3:memory:/m\n"
                      "1:name=systemd:/berth/default/c1\n0::/u\n";
    const char mi[] =
        "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime shared:14 - cgroup cgroup rw,cpuset\n"
        "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:13 - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory\n";
    assert_dir(cg, mi, "cpuacct", "/sys/fs/cgroup/cpu,cpuacct/berth/default/c1");
    assert_dir(cg, mi, "cpu", "/sys/fs/cgroup/cpu,cpuacct/berth/default/c1");
    assert_dir(cg, mi, "cpuset", "/sys/fs/cgroup/cpuset/a");
    assert_dir(cg, mi, "memory", "/sys/fs/cgroup/memory/m");
    assert_dir(cg, mi, "pids", NULL);
    /* Unified listed in /proc but not mounted. */
    assert_dir(cg, mi, NULL, NULL);
}

static void test_dir_nested_roots(void **state)
{
    (void)state;
    /* berth inside a v1 container whose hierarchies are mounted from its
     * own cgroup (root /docker/abc): the suffix below the root is used. */
    const char cg[] = "4:memory:/docker/abc/berth/default/c1\n0::/docker/abc/berth/default/c1\n";
    const char mi[] = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid master:15 - "
                      "cgroup cgroup rw,memory\n"
                      "41 31 0:38 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    assert_dir(cg, mi, "memory", "/sys/fs/cgroup/memory/berth/default/c1");
    assert_dir(cg, mi, NULL, "/sys/fs/cgroup/unified/berth/default/c1");
    /* The container's own cgroup is the mount point. */
    assert_dir("4:memory:/docker/abc\n", mi, "memory", "/sys/fs/cgroup/memory");
    /* A sibling that only shares a prefix is outside the mount. */
    assert_dir("4:memory:/docker/abcdef/c1\n", mi, "memory", NULL);
    assert_dir("4:memory:/other/c1\n", mi, "memory", NULL);
    /* Two mounts of the hierarchy: the one that holds the cgroup. */
    const char mi2[] = "50 31 0:32 /docker/zzz /mnt/other rw - cgroup cgroup rw,memory\n"
                       "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup "
                       "rw,memory\n";
    assert_dir(cg, mi2, "memory", "/sys/fs/cgroup/memory/berth/default/c1");

    /* A private cgroup namespace (v2): /proc and the mount made inside it
     * are both relative to the namespace root. */
    const char ns_mi[] = "600 500 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_dir("0::/berth/default/c1\n", ns_mi, NULL, "/sys/fs/cgroup/berth/default/c1");
    /* A cgroup outside the reader's namespace ("/../x") or a mount of an
     * ancestor ("/..") cannot be reached. */
    assert_dir("0::/../sibling/c1\n", ns_mi, NULL, NULL);
    assert_dir("0::/berth/default/c1\n",
               "600 500 0:24 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", NULL, NULL);
    /* Octal escapes in mountinfo paths. */
    assert_dir("0::/c1\n", "61 22 0:24 / /mnt/cg\\040two rw - cgroup2 none rw\n", NULL,
               "/mnt/cg two/c1");
    /* Cut lines and garbage are skipped, not misread. */
    assert_dir(v2_cgroup, "garbage\n26 23 0:24 / /x rw\n- cgroup2\n", NULL, NULL);
    assert_dir("0:/x\n", v2_mountinfo, NULL, NULL);
    assert_dir("0::relative\n", v2_mountinfo, NULL, NULL);
}

/* ---- statistics ------------------------------------------------------------------ */

/* memory.stat, cpu.stat and memory.events of a 6.x kernel (shortened). */
static void v2_fixture(const char *d, const char *mem_max, const char *pids_max, bool peak)
{
    mkdirs(d);
    put(d, "memory.current", "2347008\n");
    put(d, "memory.max", mem_max);
    if (peak)
        put(d, "memory.peak", "4194304\n");
    put(d, "memory.stat",
        "anon 1234\nfile 5678\nkernel 393216\nkernel_stack 16384\n"
        "pagetables 45056\nsec_pagetables 0\npercpu 480\nsock 0\n"
        "vmalloc 0\nshmem 0\nfile_mapped 0\nfile_dirty 0\n"
        "anon_thp 0\nfile_thp 0\ninactive_anon 1234\nactive_anon 0\n"
        "inactive_file 5678\nactive_file 0\nunevictable 0\n"
        "workingset_refault_anon 0\npgfault 1189\n");
    put(d, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
    put(d, "cpu.stat",
        "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 0\n"
        "nr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n");
    put(d, "pids.current", "2\n");
    put(d, "pids.max", pids_max);
}

static void v1_fixture(const char *mem, const char *cpu, const char *pids, const char *pids_max)
{
    mkdirs(mem);
    put(mem, "memory.usage_in_bytes", "2347008\n");
    put(mem, "memory.limit_in_bytes", "9223372036854771712\n");
    put(mem, "memory.max_usage_in_bytes", "3000000\n");
    /* rss_huge before rss and total_* after: keys match whole. */
    put(mem, "memory.stat",
        "rss_huge 0\ncache 1847296\nrss 405504\nshmem 0\n"
        "mapped_file 0\nhierarchical_memory_limit 9223372036854771712\n"
        "total_cache 99\ntotal_rss 98\n");
    put(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    mkdirs(cpu);
    put(cpu, "cpuacct.usage", "8885817\n");
    put(cpu, "cpuacct.stat", "user 150\nsystem 50\n");
    put(cpu, "cpuacct.usage_percpu", "4498969 4386848 \n");
    mkdirs(pids);
    put(pids, "pids.current", "1\n");
    put(pids, "pids.max", pids_max);
}

static void test_stats_v2(void **state)
{
    (void)state;
    v2_fixture("cg", "max\n", "max\n", true);
    shim_cgstats_t s;
    assert_int_equal(shim_cgroup_stats_v2(in_tmp("cg"), &s), 0);
    assert_int_equal(s.version, 2);
    assert_true(s.has_memory && s.has_cpu && s.has_pids);
    assert_int_equal(s.mem_usage, 2347008);
    /* "max": no limit, as containerd reports it for memory; 0 for pids. */
    assert_true(s.mem_limit == UINT64_MAX);
    assert_int_equal(s.mem_max_usage, 4194304);
    assert_int_equal(s.mem_rss, 1234);
    assert_int_equal(s.mem_cache, 5678);
    assert_int_equal(s.oom_kills, 1);
    assert_int_equal(s.cpu_usage_ns, 100000);
    assert_int_equal(s.cpu_user_ns, 60000);
    assert_int_equal(s.cpu_system_ns, 40000);
    assert_int_equal(s.n_percpu, 0);
    assert_int_equal(s.pids_current, 2);
    assert_int_equal(s.pids_limit, 0);

    /* Limits set; no memory.peak (kernel < 5.19). */
    v2_fixture("lim", "268435456\n", "100\n", false);
    assert_int_equal(shim_cgroup_stats_v2(in_tmp("lim"), &s), 0);
    assert_int_equal(s.mem_limit, 268435456);
    assert_int_equal(s.mem_max_usage, 0);
    assert_true(s.has_memory);
    assert_int_equal(s.pids_limit, 100);

    /* Controllers not enabled for the cgroup: only cpu.stat (always there). */
    mkdirs("cpuonly");
    put("cpuonly", "cpu.stat", "usage_usec 7\nuser_usec 5\nsystem_usec 2\n");
    assert_int_equal(shim_cgroup_stats_v2(in_tmp("cpuonly"), &s), 0);
    assert_false(s.has_memory);
    assert_false(s.has_pids);
    assert_true(s.has_cpu);
    assert_int_equal(s.cpu_usage_ns, 7000);

    /* Nothing readable: an error, not zeros. */
    mkdirs("empty");
    assert_int_equal(shim_cgroup_stats_v2(in_tmp("empty"), &s), -1);
    assert_int_equal(shim_cgroup_stats_v2(in_tmp("gone"), &s), -1);
    /* Garbage is not a number. */
    put("empty", "memory.current", "oops\n");
    assert_int_equal(shim_cgroup_stats_v2(in_tmp("empty"), &s), -1);
}

static void test_stats_v1(void **state)
{
    (void)state;
    v1_fixture("memory/c1", "cpuacct/c1", "pids/c1", "max\n");
    shim_cgstats_t s;
    assert_int_equal(
        shim_cgroup_stats_v1(in_tmp("memory/c1"), in_tmp("cpuacct/c1"), in_tmp("pids/c1"), &s), 0);
    assert_int_equal(s.version, 1);
    assert_true(s.has_memory && s.has_cpu && s.has_pids);
    assert_int_equal(s.mem_usage, 2347008);
    /* v1's "no limit" is the kernel's number, printed as ctr prints it. */
    assert_true(s.mem_limit == 9223372036854771712ull);
    assert_int_equal(s.mem_max_usage, 3000000);
    assert_int_equal(s.mem_cache, 1847296);
    assert_int_equal(s.mem_rss, 405504);
    assert_int_equal(s.oom_kills, 2);
    assert_int_equal(s.cpu_usage_ns, 8885817);
    long hz = sysconf(_SC_CLK_TCK);
    assert_true(hz > 0);
    assert_int_equal(s.cpu_user_ns, 150 * (1000000000ull / (uint64_t)hz));
    assert_int_equal(s.cpu_system_ns, 50 * (1000000000ull / (uint64_t)hz));
    assert_int_equal(s.n_percpu, 2);
    assert_int_equal(s.percpu[0], 4498969);
    assert_int_equal(s.percpu[1], 4386848);
    assert_int_equal(s.pids_current, 1);
    assert_int_equal(s.pids_limit, 0);

    put("pids/c1", "pids.max", "64\n");
    assert_int_equal(shim_cgroup_stats_v1(NULL, NULL, in_tmp("pids/c1"), &s), 0);
    assert_false(s.has_memory);
    assert_int_equal(s.pids_limit, 64);
    assert_int_equal(shim_cgroup_stats_v1(NULL, NULL, NULL, &s), -1);
    assert_int_equal(shim_cgroup_stats_v1(in_tmp("memory/gone"), NULL, NULL, &s), -1);
}

/* The texts with every mount point inside tmp. */
static void stats_from_mode(const char *cg, const char *mi_fmt, bool unified, shim_cgstats_t *s,
                            int want)
{
    char mi[4096];
    snprintf(mi, sizeof(mi), mi_fmt, tmp, tmp, tmp, tmp, tmp);
    berth_error_t *err = NULL;
    int r = shim_cgroup_stats_from(cg, mi, unified, s, &err);
    if (r != want)
        fail_msg("stats_from returned %d (%s)", r, err ? err->message : "no error");
    if (r < 0)
        assert_non_null(err);
    berth_error_free(&err);
}

static void stats_from(const char *cg, const char *mi_fmt, shim_cgstats_t *s, int want)
{
    stats_from_mode(cg, mi_fmt, false, s, want);
}

static void test_stats_from(void **state)
{
    (void)state;
    shim_cgstats_t s;
    /* Pure v2. */
    v2_fixture("v2/berth/default/c1", "max\n", "50\n", true);
    stats_from(v2_cgroup, "26 23 0:24 / %s/v2 rw shared:4 - cgroup2 cgroup2 rw\n", &s, 0);
    assert_int_equal(s.version, 2);
    assert_int_equal(s.mem_usage, 2347008);
    assert_int_equal(s.pids_limit, 50);

    /* Hybrid: the unified cgroup exists too (runc makes it, without
     * controllers), v1 memory wins. */
    v1_fixture("memory/berth/default/c1", "cpuacct/berth/default/c1", "pids/berth/default/c1",
               "max\n");
    mkdirs("unified/berth/default/c1");
    put("unified/berth/default/c1", "cpu.stat", "usage_usec 1\nuser_usec 1\nsystem_usec 0\n");
    const char hy[] = "35 31 0:32 / %s/memory rw - cgroup cgroup rw,memory\n"
                      "33 31 0:30 / %s/cpuacct rw - cgroup cgroup rw,cpuacct\n"
                      "39 31 0:36 / %s/pids rw - cgroup cgroup rw,pids\n"
                      "41 31 0:38 / %s/unified rw - cgroup2 cgroup2 rw\n";
    stats_from(hy_cgroup, hy, &s, 0);
    assert_int_equal(s.version, 1);
    assert_int_equal(s.cpu_usage_ns, 8885817);
    assert_int_equal(s.n_percpu, 2);
    assert_int_equal(s.mem_cache, 1847296);

    /* Unified mode (/sys/fs/cgroup is cgroup2) on a kernel that still has
     * v1 hierarchies: runc put the container in v2 only, so v2 it is. */
    stats_from_mode(hy_cgroup, hy, true, &s, 0);
    assert_int_equal(s.version, 2);
    assert_int_equal(s.cpu_usage_ns, 1000);
    assert_false(s.has_memory);

    /* A cgroup2 file system mounted over the hybrid /sys/fs/cgroup (as
     * tests/e2e/cgroup2.bats does): the v1 hierarchies under it are hidden,
     * the top mount is the unified one. */
    mkdirs("top/berth/default/c1");
    put("top/berth/default/c1", "cpu.stat", "usage_usec 7\nuser_usec 5\nsystem_usec 2\n");
    const char shadowed[] = "35 31 0:32 / %s/top/memory rw - cgroup cgroup rw,memory\n"
                            "33 31 0:30 / %s/top/cpuacct rw - cgroup cgroup rw,cpuacct\n"
                            "39 31 0:36 / %s/top/pids rw - cgroup cgroup rw,pids\n"
                            "41 31 0:38 / %s/top/unified rw - cgroup2 cgroup2 rw\n"
                            "90 31 0:38 / %s/top rw - cgroup2 cgroup2 rw\n";
    stats_from(hy_cgroup, shadowed, &s, 0);
    assert_int_equal(s.version, 2);
    assert_int_equal(s.cpu_usage_ns, 7000);

    /* Nothing mounted, or the cgroup is gone. */
    stats_from(hy_cgroup, "22 1 259:1 / / rw - ext4 /dev/root rw\n", &s, -1);
    stats_from("0::/berth/default/gone\n", "26 23 0:24 / %s/v2 rw - cgroup2 cgroup2 rw\n", &s, -1);
}

/* ---- OOM ---------------------------------------------------------------------------- */

static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void test_oom_v2(void **state)
{
    (void)state;
    mkdirs("oom");
    put("oom", "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
    berth_error_t *err = NULL;
    char *path = NULL;
    int fd = shim_cgroup_oom_watch_dir(in_tmp("oom"), true, &path, &err);
    assert_true(fd >= 0);
    assert_null(err);
    assert_string_equal(path, in_tmp("oom/memory.events"));
    uint64_t last = 0;
    assert_false(readable(fd, 0));

    /* "max" and "oom" move (reclaim, an OOM the kernel resolved) but no
     * kill: the file changed, no OOM kill reported. */
    put("oom", "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 0\n");
    assert_true(readable(fd, 1000));
    assert_false(shim_cgroup_oom_check(fd, true, path, &last));
    assert_false(readable(fd, 0)); /* drained */

    put("oom", "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
    assert_true(readable(fd, 1000));
    assert_true(shim_cgroup_oom_check(fd, true, path, &last));
    assert_int_equal(last, 1);
    /* Once: the same counter again is not another kill. */
    put("oom", "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n");
    assert_true(readable(fd, 1000));
    assert_false(shim_cgroup_oom_check(fd, true, path, &last));
    put("oom", "memory.events", "low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\noom_group_kill 1\n");
    assert_true(readable(fd, 1000));
    assert_true(shim_cgroup_oom_check(fd, true, path, &last));
    assert_int_equal(last, 3);
    /* The cgroup removed: no kill, no crash. */
    unlink(path);
    assert_false(shim_cgroup_oom_check(fd, true, path, &last));
    close(fd);
    free(path);

    /* No memory controller in the cgroup: no watch, an error. */
    mkdirs("nomem");
    assert_true(shim_cgroup_oom_watch_dir(in_tmp("nomem"), true, &path, &err) < 0);
    assert_non_null(err);
    assert_null(path);
    berth_error_free(&err);
}

static void test_oom_v1_counter(void **state)
{
    (void)state;
    /* v1's eventfd fires on every OOM and on removal: only the oom_kill
     * line (not oom_kill_disable) counts; a counter that does not move is
     * re-read for 100 ms. The eventfd itself needs a real
     * memory cgroup (tests/unit/test_rt_shim.c, e2e). */
    mkdirs("v1");
    put("v1", "memory.oom_control", "oom_kill_disable 0\nunder_oom 1\noom_kill 0\n");
    int fd = open("/dev/null", O_RDONLY | O_NONBLOCK);
    assert_true(fd >= 0);
    uint64_t last = 0;
    const char *p = in_tmp("v1/memory.oom_control");
    assert_false(shim_cgroup_oom_check(fd, false, p, &last));
    put("v1", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
    assert_true(shim_cgroup_oom_check(fd, false, p, &last));
    assert_false(shim_cgroup_oom_check(fd, false, p, &last));
    assert_false(shim_cgroup_oom_check(fd, false, NULL, &last));

    /* The eventfd fires when the OOM starts; the kernel counts the kill
     * only once it has chosen and killed the victim: the check never waits
     * (the shim's loop calls it again, fd -1, from a 5 ms timer), and a
     * counter that moved since is this OOM's kill. */
    assert_false(shim_cgroup_oom_check(fd, false, p, &last));
    put("v1", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    assert_true(shim_cgroup_oom_check(-1, false, p, &last));
    assert_int_equal(last, 2);
    /* v2 does not wait: the kernel notifies memory.events again. */
    mkdirs("v2");
    put("v2", "memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 0\n");
    last = 0;
    assert_false(shim_cgroup_oom_check(fd, true, in_tmp("v2/memory.events"), &last));
    close(fd);
}

/* ---- runc's state.json ------------------------------------------------------------ */

/* runc 1.1.5 on this host (hybrid), shortened: Go's encoder escapes <, >
 * and & as \u003c, \u003e, \u0026 and keeps other UTF-8 as is. The label
 * carries a decoy "cgroup_paths". */
static const char state_hybrid[] =
    "{\"id\":\"c1\",\"init_process_pid\":25353,\"init_process_start\":2022657,"
    "\"created\":\"2026-11-28T21:50:29.304965957Z\",\"config\":{\"no_pivot_root\":false,"
    "\"parent_death_signal\":0,\"rootfs\":\"/run/berth/runtime/default/c1/rootfs\","
    "\"umask\":null,\"readonlyfs\":true,\"rootPropagation\":0,\"mounts\":[{\"source\":"
    "\"proc\",\"destination\":\"/proc\",\"device\":\"proc\",\"flags\":0,"
    "\"propagation_flags\":null,\"data\":\"\",\"rec_attr\":null,\"premount_cmds\":null}],"
    "\"cgroups\":{\"path\":\"/berth/default/c1\",\"scope_prefix\":\"\",\"devices\":[{\"type\":"
    "97,\"major\":-1,\"minor\":-1,\"permissions\":\"rwm\",\"allow\":false}],\"memory\":0,"
    "\"cpu_weight\":0,\"freezer\":\"\",\"unified\":null},\"sysctl\":null,"
    "\"Hooks\":{\"createContainer\":null,\"poststop\":null},\"version\":\"1.0.2-dev\","
    "\"labels\":[\"org.example/\\u003ctag\\u003e=a\\u0026b \\\"cgroup_paths\\\":{\\\"x\\\":"
    "\\\"/etc\\\"} \xc3\xa9\",\"bundle=/run/berth/runtime/default/c1\"],"
    "\"no_new_keyring\":false},\"rootless\":false,"
    "\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/unified/berth/default/c1\","
    "\"blkio\":\"/sys/fs/cgroup/blkio/berth/default/c1\","
    "\"cpu\":\"/sys/fs/cgroup/cpu/berth/default/c1\","
    "\"cpuacct\":\"/sys/fs/cgroup/cpuacct/berth/default/c1\","
    "\"memory\":\"/sys/fs/cgroup/memory/berth/default/c1\","
    "\"name=systemd\":\"/sys/fs/cgroup/systemd/berth/default/c1\","
    "\"pids\":\"/sys/fs/cgroup/pids/berth/default/c1\"},"
    "\"namespace_paths\":{\"NEWCGROUP\":\"/proc/25631/ns/cgroup\"},"
    "\"external_descriptors\":[\"/dev/null\",\"/dev/null\",\"/dev/null\"],"
    "\"intel_rdt_path\":\"\"}";

static char paths[32][PATH_MAX];

static void test_state_paths_v1(void **state)
{
    (void)state;
    assert_int_equal(shim_cgroup_state_paths(state_hybrid, paths, 32), 7);
    assert_string_equal(paths[0], "/sys/fs/cgroup/unified/berth/default/c1");
    assert_string_equal(paths[1], "/sys/fs/cgroup/blkio/berth/default/c1");
    assert_string_equal(paths[4], "/sys/fs/cgroup/memory/berth/default/c1");
    assert_string_equal(paths[5], "/sys/fs/cgroup/systemd/berth/default/c1");
    assert_string_equal(paths[6], "/sys/fs/cgroup/pids/berth/default/c1");
    /* Shared v1 hierarchy (cpu,cpuacct): the same directory twice. */
    const char shared[] = "{\"id\":\"c1\",\"cgroup_paths\":{"
                          "\"cpu\":\"/sys/fs/cgroup/cpu,cpuacct/berth/default/c1\","
                          "\"cpuacct\":\"/sys/fs/cgroup/cpu,cpuacct/berth/default/c1\"}}";
    assert_int_equal(shim_cgroup_state_paths(shared, paths, 32), 2);
    assert_string_equal(paths[1], "/sys/fs/cgroup/cpu,cpuacct/berth/default/c1");
    /* Escapes in paths are decoded (\/ and \u00xx). */
    const char esc[] = "{ \"cgroup_paths\" : { \"memory\" : "
                       "\"\\/sys\\/fs\\/cgroup\\/memory\\/a\\u0026b\\/c1\" } }";
    assert_int_equal(shim_cgroup_state_paths(esc, paths, 32), 1);
    assert_string_equal(paths[0], "/sys/fs/cgroup/memory/a&b/c1");
}

static void test_state_paths_v2(void **state)
{
    (void)state;
    const char v2[] = "{\"id\":\"c1\",\"init_process_pid\":4242,\"config\":{\"cgroups\":"
                      "{\"path\":\"/berth/default/c1\",\"unified\":{\"memory.high\":\"max\"}}},"
                      "\"rootless\":false,\"cgroup_paths\":{\"\":"
                      "\"/sys/fs/cgroup/berth/default/c1\"},\"namespace_paths\":{}}";
    assert_int_equal(shim_cgroup_state_paths(v2, paths, 32), 1);
    assert_string_equal(paths[0], "/sys/fs/cgroup/berth/default/c1");
    assert_int_equal(shim_cgroup_state_paths("{\"cgroup_paths\":{}}", paths, 32), 0);
}

static void test_state_paths_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "[]",
        "{}",
        "{\"id\":\"c1\"}",
        "{\"cgroup_paths\":null}",
        "{\"cgroup_paths\":{\"\":\"/etc\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/berth/../..\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/berth/./x\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup//x\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/x/\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/\\u002e\\u002e\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/x\\u0000y\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/x\\ny\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/\\u00e9\"}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/\xc3\xa9\"}}",
        "{\"cgroup_paths\":{\"\":1}}",
        "{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/x\"",
        "{\"cgroup_paths\":{\"\" \"/sys/fs/cgroup/x\"}}",
        "{\"cgroup_paths\":[\"/sys/fs/cgroup/x\"]}",
        "{\"a\":\"unterminated, \"cgroup_paths\":{\"\":\"/sys/fs/cgroup/x\"}}",
        "{\"a\":[1,2,{\"b\":\"\\\"cgroup_paths\\\":{}\"}]}",
        "{\"config\":{\"cgroup_paths\":{\"\":\"/sys/fs/cgroup/x\"}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = shim_cgroup_state_paths(bad[i], paths, 32);
        if (n != -1)
            fail_msg("accepted (%d): %s", n, bad[i]);
    }
    /* More than the caller has room for. */
    assert_int_equal(shim_cgroup_state_paths(state_hybrid, paths, 6), -1);
    /* Deep nesting before the key is refused, not a stack overflow. */
    char deep[600] = "{\"a\":";
    for (int i = 0; i < 200; i++)
        strcat(deep, "[");
    assert_int_equal(shim_cgroup_state_paths(deep, paths, 32), -1);
}

/* ---- removal ------------------------------------------------------------------------ */

static void test_remove_nested(void **state)
{
    (void)state;
    /* The container made child cgroups: all go, deepest first. */
    mkdirs("cg/c1/a/b/c");
    mkdirs("cg/c1/d");
    mkdirs("cg/sibling");
    assert_int_equal(shim_cgroup_remove(in_tmp("cg/c1")), 0);
    assert_false(exists("cg/c1"));
    assert_true(exists("cg/sibling"));
    /* Already gone. */
    assert_int_equal(shim_cgroup_remove(in_tmp("cg/c1")), 0);
    /* A plain empty cgroup. */
    mkdirs("cg/c2");
    assert_int_equal(shim_cgroup_remove(in_tmp("cg/c2")), 0);
    assert_false(exists("cg/c2"));
}

static void test_remove_stays_inside(void **state)
{
    (void)state;
    /* A symlink to a directory elsewhere is never followed; the cgroup
     * stays (on cgroupfs no symlink can exist: runc delete would say). */
    mkdirs("outside/keep/deeper");
    mkdirs("cg/c1/child");
    char target[PATH_MAX];
    snprintf(target, sizeof(target), "%s/outside/keep", tmp);
    assert_int_equal(symlink(target, in_tmp("cg/c1/link")), 0);
    assert_int_equal(shim_cgroup_remove(in_tmp("cg/c1")), -1);
    assert_true(exists("outside/keep/deeper"));
    assert_false(exists("cg/c1/child"));
    assert_true(exists("cg/c1/link"));
    /* The path itself a symlink: refused. */
    assert_int_equal(symlink(in_tmp("outside/keep"), in_tmp("cg/c3")), 0);
    assert_int_equal(shim_cgroup_remove(in_tmp("cg/c3")), -1);
    assert_true(exists("outside/keep/deeper"));
    /* A file keeps a plain directory (cgroupfs files go with the cgroup). */
    mkdirs("cg/c4/child");
    put("cg/c4", "memory.max", "max\n");
    assert_int_equal(shim_cgroup_remove(in_tmp("cg/c4")), -1);
    assert_int_equal(errno, ENOTEMPTY);
    assert_false(exists("cg/c4/child"));
}

static void test_remove_refuses_mount_root(void **state)
{
    (void)state;
    /* A hierarchy root (the path is a mount point) is not a container's
     * cgroup: nothing below it is touched. Needs root for the mount. */
    mkdirs("mnt");
    if (geteuid() != 0 || mount("tmpfs", in_tmp("mnt"), "tmpfs", 0, "size=64k") < 0) {
        skip();
        return;
    }
    mkdirs("mnt/child/grandchild");
    int r = shim_cgroup_remove(in_tmp("mnt"));
    int e = errno;
    bool kept = exists("mnt/child/grandchild");
    /* A child on another filesystem is not entered either. */
    mkdirs("cg/c1/a");
    mkdirs("cg/c1/mnt");
    bool mounted = mount("tmpfs", in_tmp("cg/c1/mnt"), "tmpfs", 0, "size=64k") == 0;
    if (mounted)
        mkdirs("cg/c1/mnt/inner");
    int r2 = shim_cgroup_remove(in_tmp("cg/c1"));
    bool inner = mounted && exists("cg/c1/mnt/inner");
    if (mounted)
        umount2(in_tmp("cg/c1/mnt"), MNT_DETACH);
    umount2(in_tmp("mnt"), MNT_DETACH);
    assert_int_equal(r, -1);
    assert_int_equal(e, EXDEV);
    assert_true(kept);
    if (mounted) {
        assert_int_equal(r2, -1);
        assert_true(inner);
        assert_false(exists("cg/c1/a"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dir_pure_v2),
        cmocka_unit_test(test_dir_hybrid),
        cmocka_unit_test(test_dir_shared_hierarchy),
        cmocka_unit_test(test_dir_nested_roots),
        cmocka_unit_test_setup_teardown(test_stats_v2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_v2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_v1_counter, setup, teardown),
        cmocka_unit_test(test_state_paths_v1),
        cmocka_unit_test(test_state_paths_v2),
        cmocka_unit_test(test_state_paths_refused),
        cmocka_unit_test_setup_teardown(test_remove_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_stays_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_refuses_mount_root, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

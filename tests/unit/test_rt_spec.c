/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of spec.c: containers.create options → OCI runtime spec, with
 * containerd's defaults, the image config, bind mount validation, privileged
 * mode, rlimits against the host, user-supplied specs, exec processes and
 * chain ids. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

/* ---- helpers: JSON text → msgpack params ---------------------------------- */

static void pack_json(msgpack_packer *pk, json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, (uint32_t)json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            msgpack_pack_str_with_body(pk, k, strlen(k));
            pack_json(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, (uint32_t)json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) pack_json(pk, v);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(j));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(j));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    default:
        msgpack_pack_nil(pk);
    }
}

typedef struct {
    msgpack_sbuffer sb;
    msgpack_unpacked up;
} mp_t;

static const msgpack_object *mp(mp_t *m, const char *json)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    if (!j)
        fail_msg("bad test JSON: %s: %s", json, je.text);
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m->sb, msgpack_sbuffer_write);
    pack_json(&pk, j);
    json_decref(j);
    msgpack_unpacked_init(&m->up);
    assert_int_equal(msgpack_unpack_next(&m->up, m->sb.data, m->sb.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    return &m->up.data;
}

static void mp_free(mp_t *m)
{
    msgpack_unpacked_destroy(&m->up);
    msgpack_sbuffer_destroy(&m->sb);
}

static const char *IMAGE_CONFIG =
    "{\"architecture\":\"amd64\",\"os\":\"linux\","
    "\"config\":{\"Entrypoint\":[\"/bin/sh\"],\"Cmd\":[\"-c\",\"echo hi\"],"
    "\"Env\":[\"PATH=/bin:/usr/bin\",\"FOO=1\"],\"WorkingDir\":\"/work\"},"
    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}}";

static rt_host_t host = {.nofile_hard = 1048576, .cap_last_cap = 40};

/* Generates a spec from params JSON; fails the test on error. */
static json_t *gen_with(const char *params, const char *image_config, const rt_host_t *h,
                        berth_error_t **err_out)
{
    mp_t m;
    const msgpack_object *p = mp(&m, params);
    rt_spec_opts_t o;
    berth_error_t *err = NULL;
    json_t *cfg = image_config ? json_loads(image_config, 0, NULL) : NULL;
    json_t *spec = NULL;
    if (rt_spec_opts_from_mp(p, &o, &err) == 0) {
        rt_spec_input_t in = {.id = "c1",
                              .ns = "default",
                              .image_config = cfg,
                              .rootfd = -1,
                              .host = h,
                              .cgroups_path = "/berth/default/c1"};
        spec = rt_spec_generate(&in, &o, &err);
        rt_spec_opts_free(&o);
    }
    json_decref(cfg);
    mp_free(&m);
    if (err_out)
        *err_out = err;
    else if (err)
        fail_msg("unexpected error: %s", err->message);
    return spec;
}

static json_t *gen(const char *params)
{
    return gen_with(params, IMAGE_CONFIG, &host, NULL);
}

static json_t *path(json_t *j, const char *p)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", p);
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k && j; k = strtok_r(NULL, ".", &save)) {
        if (json_is_array(j))
            j = json_array_get(j, (size_t)atoi(k));
        else
            j = json_object_get(j, k);
    }
    return j;
}

static const char *pstr(json_t *j, const char *p)
{
    json_t *v = path(j, p);
    if (!json_is_string(v))
        fail_msg("%s is not a string", p);
    return json_string_value(v);
}

static bool has_str(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

static json_t *mount_at(json_t *spec, const char *dst)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "destination")), dst) == 0)
            return m;
    }
    return NULL;
}

static bool has_ns(json_t *spec, const char *type)
{
    size_t i;
    json_t *n;
    json_array_foreach(path(spec, "linux.namespaces"), i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "type")), type) == 0)
            return true;
    }
    return false;
}

static void expect_err(const char *params, const char *image_config, berth_code_t code,
                       const char *needle)
{
    berth_error_t *err = NULL;
    json_t *s = gen_with(params, image_config, &host, &err);
    if (s)
        fail_msg("params %s: expected an error", params);
    assert_non_null(err);
    if (err->code != code || !strstr(err->message, needle))
        fail_msg("params %s: got %s \"%s\", want %s containing \"%s\"", params,
                 berth_code_name(err->code), err->message, berth_code_name(code), needle);
    berth_error_free(&err);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    json_t *s = gen("{}");
    assert_string_equal(pstr(s, "ociVersion"), "1.0.2-dev");
    assert_string_equal(pstr(s, "process.args.0"), "/bin/sh");
    assert_string_equal(pstr(s, "process.args.1"), "-c");
    assert_string_equal(pstr(s, "process.args.2"), "echo hi");
    /* the image's PATH replaces the default one */
    json_t *env = path(s, "process.env");
    assert_int_equal(json_array_size(env), 2);
    assert_string_equal(pstr(s, "process.env.0"), "PATH=/bin:/usr/bin");
    assert_string_equal(pstr(s, "process.env.1"), "FOO=1");
    assert_string_equal(pstr(s, "process.cwd"), "/work");
    assert_false(json_is_true(path(s, "process.terminal")));
    assert_int_equal(json_integer_value(path(s, "process.user.uid")), 0);
    assert_int_equal(json_integer_value(path(s, "process.user.gid")), 0);
    assert_int_equal(json_integer_value(path(s, "process.user.additionalGids.0")), 0);
    json_t *caps = path(s, "process.capabilities.bounding");
    assert_int_equal(json_array_size(caps), 14);
    assert_true(has_str(caps, "CAP_CHOWN"));
    assert_true(has_str(caps, "CAP_AUDIT_WRITE"));
    assert_false(has_str(caps, "CAP_SYS_ADMIN"));
    assert_true(json_equal(caps, path(s, "process.capabilities.effective")));
    assert_true(json_equal(caps, path(s, "process.capabilities.permitted")));
    assert_string_equal(pstr(s, "process.rlimits.0.type"), "RLIMIT_NOFILE");
    assert_int_equal(json_integer_value(path(s, "process.rlimits.0.hard")), 1024);
    assert_int_equal(json_integer_value(path(s, "process.rlimits.0.soft")), 1024);
    assert_true(json_is_true(path(s, "process.noNewPrivileges")));
    assert_string_equal(pstr(s, "root.path"), "rootfs");
    assert_true(json_is_false(path(s, "root.readonly")));
    assert_null(json_object_get(s, "hostname"));

    static const char *const dsts[] = {"/proc",       "/dev", "/dev/pts", "/dev/shm",
                                       "/dev/mqueue", "/sys", "/run",     "/sys/fs/cgroup"};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(dsts); i++)
        if (!mount_at(s, dsts[i]))
            fail_msg("default mount %s missing", dsts[i]);
    assert_true(has_str(json_object_get(mount_at(s, "/sys"), "options"), "ro"));
    assert_true(has_str(json_object_get(mount_at(s, "/sys/fs/cgroup"), "options"), "ro"));
    assert_string_equal(json_string_value(json_object_get(mount_at(s, "/dev/pts"), "type")),
                        "devpts");

    assert_string_equal(pstr(s, "linux.cgroupsPath"), "/berth/default/c1");
    static const char *const nss[] = {"pid", "ipc", "uts", "mount", "network"};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(nss); i++)
        assert_true(has_ns(s, nss[i]));
    assert_false(has_ns(s, "user"));
    assert_true(has_str(path(s, "linux.maskedPaths"), "/proc/kcore"));
    assert_true(has_str(path(s, "linux.maskedPaths"), "/sys/firmware"));
    assert_true(has_str(path(s, "linux.readonlyPaths"), "/proc/sys"));
    assert_true(has_str(path(s, "linux.readonlyPaths"), "/proc/sysrq-trigger"));
    assert_true(json_is_false(path(s, "linux.resources.devices.0.allow")));
    assert_string_equal(pstr(s, "linux.resources.devices.0.access"), "rwm");
    assert_string_equal(pstr(s, "linux.seccomp.defaultAction"), "SCMP_ACT_ERRNO");
    assert_null(path(s, "linux.resources.memory"));
    json_decref(s);
    (void)state;
}

static void test_options(void **state)
{
    json_t *s = gen("{\"args\":[\"/bin/echo\",\"x\"],\"env\":[\"FOO=2\",\"BAR=3\"],"
                    "\"cwd\":\"/tmp\",\"tty\":true,\"hostname\":\"box\",\"readonly_rootfs\":true,"
                    "\"memory_limit\":67108864,\"cpus\":1.5,\"cpu_shares\":512,"
                    "\"cpuset_cpus\":\"0\",\"pids_limit\":64,"
                    "\"annotations\":{\"a\":\"b\"},\"cap_add\":[\"net_admin\",\"CAP_SYS_TIME\"],"
                    "\"cap_drop\":[\"mknod\"],\"net_host\":true,\"user\":\"123:456\"}");
    /* explicit args replace entrypoint and cmd, like ctr */
    assert_int_equal(json_array_size(path(s, "process.args")), 2);
    assert_string_equal(pstr(s, "process.args.0"), "/bin/echo");
    json_t *env = path(s, "process.env");
    assert_true(has_str(env, "FOO=2"));
    assert_false(has_str(env, "FOO=1"));
    assert_true(has_str(env, "BAR=3"));
    assert_true(has_str(env, "TERM=xterm"));
    assert_string_equal(pstr(s, "process.cwd"), "/tmp");
    assert_true(json_is_true(path(s, "process.terminal")));
    assert_int_equal(json_integer_value(path(s, "process.user.uid")), 123);
    assert_int_equal(json_integer_value(path(s, "process.user.gid")), 456);
    assert_string_equal(pstr(s, "hostname"), "box");
    assert_true(json_is_true(path(s, "root.readonly")));
    assert_int_equal(json_integer_value(path(s, "linux.resources.memory.limit")), 67108864);
    assert_int_equal(json_integer_value(path(s, "linux.resources.cpu.quota")), 150000);
    assert_int_equal(json_integer_value(path(s, "linux.resources.cpu.period")), 100000);
    assert_int_equal(json_integer_value(path(s, "linux.resources.cpu.shares")), 512);
    assert_string_equal(pstr(s, "linux.resources.cpu.cpus"), "0");
    assert_int_equal(json_integer_value(path(s, "linux.resources.pids.limit")), 64);
    assert_string_equal(pstr(s, "annotations.a"), "b");
    json_t *caps = path(s, "process.capabilities.bounding");
    assert_true(has_str(caps, "CAP_NET_ADMIN"));
    assert_true(has_str(caps, "CAP_SYS_TIME"));
    assert_false(has_str(caps, "CAP_MKNOD"));
    /* CAP_SYS_TIME opens settimeofday in the default seccomp profile */
    json_t *sc = path(s, "linux.seccomp.syscalls");
    bool found = false;
    size_t i;
    json_t *r;
    json_array_foreach(sc, i, r) found |= has_str(json_object_get(r, "names"), "settimeofday");
    assert_true(found);
    /* net host: no network namespace, host's hosts file */
    assert_false(has_ns(s, "network"));
    assert_true(has_ns(s, "pid"));
    assert_non_null(mount_at(s, "/etc/hosts"));
    json_decref(s);
    (void)state;
}

static void test_privileged(void **state)
{
    rt_host_t h = {.nofile_hard = 4096, .cap_last_cap = 40, .devices = json_array()};
    json_t *dev = json_object();
    json_object_set_new(dev, "path", json_string("/dev/fake0"));
    json_array_append_new(h.devices, dev);
    json_t *s = gen_with("{\"privileged\":true}", IMAGE_CONFIG, &h, NULL);
    assert_int_equal(json_array_size(path(s, "process.capabilities.bounding")), 41);
    assert_true(json_is_false(path(s, "process.noNewPrivileges")));
    assert_null(path(s, "linux.seccomp"));
    assert_null(path(s, "linux.maskedPaths"));
    assert_null(path(s, "linux.readonlyPaths"));
    assert_false(has_str(json_object_get(mount_at(s, "/sys"), "options"), "ro"));
    assert_false(has_str(json_object_get(mount_at(s, "/sys/fs/cgroup"), "options"), "ro"));
    assert_true(json_is_true(path(s, "linux.resources.devices.0.allow")));
    assert_string_equal(pstr(s, "linux.devices.0.path"), "/dev/fake0");
    json_decref(s);
    rt_host_clear(&h);

    /* an older kernel knows fewer capabilities */
    rt_host_t old = {.nofile_hard = 4096, .cap_last_cap = 37};
    s = gen_with("{\"privileged\":true,\"cap_drop\":[\"ALL\"],\"cap_add\":[\"CAP_KILL\"]}",
                 IMAGE_CONFIG, &old, NULL);
    assert_int_equal(json_array_size(path(s, "process.capabilities.bounding")), 1);
    json_decref(s);
    s = gen_with("{\"privileged\":true}", IMAGE_CONFIG, &old, NULL);
    assert_int_equal(json_array_size(path(s, "process.capabilities.bounding")), 38);
    json_decref(s);

    /* a daemon without CAP_SYS_RESOURCE (24) in its bounding set cannot give it */
    rt_host_t lim = {.nofile_hard = 4096, .cap_last_cap = 40, .cap_bounding = 0x1fffeffffffull};
    s = gen_with("{\"privileged\":true}", IMAGE_CONFIG, &lim, NULL);
    assert_int_equal(json_array_size(path(s, "process.capabilities.bounding")), 40);
    assert_false(has_str(path(s, "process.capabilities.bounding"), "CAP_SYS_RESOURCE"));
    assert_true(has_str(path(s, "process.capabilities.bounding"), "CAP_SYS_ADMIN"));
    json_decref(s);
    s = gen_with("{\"cap_add\":[\"ALL\"]}", IMAGE_CONFIG, &lim, NULL);
    assert_false(has_str(path(s, "process.capabilities.bounding"), "CAP_SYS_RESOURCE"));
    json_decref(s);
    (void)state;
}

static void test_rlimits(void **state)
{
    rt_host_t low = {.nofile_hard = 512, .cap_last_cap = 40};
    json_t *s = gen_with("{}", IMAGE_CONFIG, &low, NULL);
    assert_int_equal(json_integer_value(path(s, "process.rlimits.0.hard")), 512);
    assert_int_equal(json_integer_value(path(s, "process.rlimits.0.soft")), 512);
    json_decref(s);

    rt_host_t mid = {.nofile_hard = 4096, .cap_last_cap = 40};
    s = gen_with("{\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"soft\":100000,\"hard\":100000},"
                 "{\"type\":\"RLIMIT_NPROC\",\"soft\":10,\"hard\":20}]}",
                 IMAGE_CONFIG, &mid, NULL);
    json_t *rl = path(s, "process.rlimits");
    assert_int_equal(json_array_size(rl), 2);
    assert_string_equal(pstr(s, "process.rlimits.0.type"), "RLIMIT_NOFILE");
    assert_int_equal(json_integer_value(path(s, "process.rlimits.0.hard")), 4096);
    assert_int_equal(json_integer_value(path(s, "process.rlimits.0.soft")), 4096);
    assert_string_equal(pstr(s, "process.rlimits.1.type"), "RLIMIT_NPROC");
    assert_int_equal(json_integer_value(path(s, "process.rlimits.1.soft")), 10);
    json_decref(s);

    expect_err("{\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"soft\":10,\"hard\":5}]}", IMAGE_CONFIG,
               BERTH_E_INVALID_ARGUMENT, "soft limit above hard");
    expect_err("{\"rlimits\":[{\"type\":\"RLIMIT_BOGUS\",\"soft\":1,\"hard\":1}]}", IMAGE_CONFIG,
               BERTH_E_INVALID_ARGUMENT, "unknown rlimit");
    (void)state;
}

static void test_bad_options(void **state)
{
    expect_err("{}", "{\"config\":{}}", BERTH_E_INVALID_ARGUMENT, "no command");
    expect_err("{}", NULL, BERTH_E_INVALID_ARGUMENT, "no command");
    expect_err("{\"args\":[]}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "args");
    expect_err("{\"args\":\"ls\"}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "args");
    expect_err("{\"env\":[\"NOEQUALS\"]}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "KEY=VALUE");
    expect_err("{\"env\":[\"=x\"]}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "KEY=VALUE");
    expect_err("{\"cap_add\":[\"CAP_FLY\"]}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT,
               "unknown capability");
    expect_err("{\"cwd\":\"relative\"}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT,
               "working directory");
    expect_err("{\"cwd\":\"/a/../b\"}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT,
               "working directory");
    expect_err("{\"cpus\":-1}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "cpus");
    expect_err("{\"memory_limit\":-5}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "memory_limit");
    expect_err("{\"seccomp\":\"lax\"}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "seccomp");
    expect_err("{\"seccomp_profile\":\"not json\"}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT,
               "seccomp_profile");
    expect_err("{\"user\":\"nobody\"}", IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT,
               "unable to find user nobody");
    expect_err("{}", "{\"config\":{\"Cmd\":[\"x\"],\"User\":\"ghost\"}}", BERTH_E_INVALID_ARGUMENT,
               "unable to find user ghost");
    expect_err("{}", "{\"config\":{\"Cmd\":[1]}}", BERTH_E_INVALID_ARGUMENT, "Cmd");
    expect_err("{\"mounts\":[{\"type\":\"tmpfs\",\"destination\":\"rel\"}]}", IMAGE_CONFIG,
               BERTH_E_INVALID_ARGUMENT, "destination");
    expect_err("{\"mounts\":[{\"type\":\"bind\",\"destination\":\"/x\"}]}", IMAGE_CONFIG,
               BERTH_E_INVALID_ARGUMENT, "needs a source");
    (void)state;
}

static void test_seccomp_choices(void **state)
{
    json_t *s = gen("{\"seccomp\":\"unconfined\"}");
    assert_null(path(s, "linux.seccomp"));
    assert_non_null(path(s, "linux.maskedPaths"));
    json_decref(s);
    s = gen("{\"seccomp_profile\":\"{\\\"defaultAction\\\":\\\"SCMP_ACT_LOG\\\"}\"}");
    assert_string_equal(pstr(s, "linux.seccomp.defaultAction"), "SCMP_ACT_LOG");
    json_decref(s);
    (void)state;
}

static char tmp[256];

static void test_bind_mounts(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/berth-test-spec-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    char p[512], q[512];
    snprintf(p, sizeof(p), "%s/data", tmp);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/data/v2", tmp);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/data/current", tmp);
    assert_int_equal(symlink("v2", p), 0); /* stays inside data/ */
    snprintf(p, sizeof(p), "%s/data/evil", tmp);
    assert_int_equal(symlink("/etc", p), 0); /* leads out of data/ */
    snprintf(p, sizeof(p), "%s/data/up", tmp);
    assert_int_equal(symlink("../..", p), 0);

    char params[2048];
    snprintf(params, sizeof(params),
             "{\"mounts\":[{\"type\":\"bind\",\"source\":\"%s/data/current\","
             "\"destination\":\"/data\",\"options\":[\"ro\"]},"
             "{\"type\":\"tmpfs\",\"destination\":\"/dev/shm\",\"options\":[\"size=1m\"]}]}",
             tmp);
    json_t *s = gen(params);
    json_t *m = mount_at(s, "/data");
    assert_non_null(m);
    snprintf(q, sizeof(q), "%s/data/v2", tmp);
    char real[512];
    assert_non_null(realpath(q, real));
    assert_string_equal(json_string_value(json_object_get(m, "source")), real);
    assert_true(has_str(json_object_get(m, "options"), "ro"));
    assert_true(has_str(json_object_get(m, "options"), "rbind"));
    /* same destination as a default mount replaces it (only one /dev/shm) */
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(json_object_get(s, "mounts"), i, v) n +=
        strcmp(json_string_value(json_object_get(v, "destination")), "/dev/shm") == 0;
    assert_int_equal(n, 1);
    assert_true(has_str(json_object_get(mount_at(s, "/dev/shm"), "options"), "size=1m"));
    json_decref(s);

    snprintf(
        params, sizeof(params),
        "{\"mounts\":[{\"type\":\"bind\",\"source\":\"%s/data/evil\",\"destination\":\"/x\"}]}",
        tmp);
    expect_err(params, IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "escapes through the symlink");
    snprintf(params, sizeof(params),
             "{\"mounts\":[{\"type\":\"bind\",\"source\":\"%s/data/evil/passwd\","
             "\"destination\":\"/x\"}]}",
             tmp);
    expect_err(params, IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "escapes");
    snprintf(params, sizeof(params),
             "{\"mounts\":[{\"type\":\"bind\",\"source\":\"%s/data/up\",\"destination\":\"/x\"}]}",
             tmp);
    expect_err(params, IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "escapes");
    snprintf(params, sizeof(params),
             "{\"mounts\":[{\"type\":\"bind\",\"source\":\"%s/missing\",\"destination\":\"/x\"}]}",
             tmp);
    expect_err(params, IMAGE_CONFIG, BERTH_E_NOT_FOUND, "does not exist");
    expect_err("{\"mounts\":[{\"type\":\"bind\",\"source\":\"rel\",\"destination\":\"/x\"}]}",
               IMAGE_CONFIG, BERTH_E_INVALID_ARGUMENT, "absolute");

    /* direct API: ".." inside the source is resolved lexically after links */
    char *res = NULL;
    berth_error_t *err = NULL;
    snprintf(p, sizeof(p), "%s/data/v2/../v2", tmp);
    assert_int_equal(rt_resolve_bind_source(p, &res, &err), 0);
    assert_string_equal(res, real);
    free(res);

    snprintf(p, sizeof(p), "rm -rf '%s'", tmp);
    assert_int_equal(system(p), 0);
    (void)state;
}

static void test_user_spec(void **state)
{
    rt_spec_input_t in = {.id = "c1",
                          .ns = "default",
                          .rootfd = -1,
                          .host = &host,
                          .cgroups_path = "/berth/default/c1"};
    berth_error_t *err = NULL;
    const char *ok =
        "{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"/bin/true\"],\"cwd\":\"/\"},"
        "\"root\":{\"path\":\"/host/dir\"}}";
    json_t *s = rt_spec_from_user(ok, strlen(ok), &in, &err);
    assert_non_null(s);
    assert_string_equal(pstr(s, "root.path"), "rootfs");
    assert_string_equal(pstr(s, "linux.cgroupsPath"), "/berth/default/c1");
    json_decref(s);
    const char *bad[] = {"[]", "{\"ociVersion\":\"1\"}", "{", "{\"a\":1,\"a\":2}",
                         "{\"ociVersion\":\"1\",\"process\":{\"args\":[],\"cwd\":\"/\"}}"};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(bad); i++) {
        assert_null(rt_spec_from_user(bad[i], strlen(bad[i]), &in, &err));
        assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
        berth_error_free(&err);
    }
    (void)state;
}

static void test_fast_lifecycle(void **state)
{
    json_t *s = gen("{}");
    assert_true(rt_spec_fast_lifecycle(s));
    json_object_set_new(s, "hooks", json_pack("{s:[]}", "poststop"));
    assert_true(rt_spec_fast_lifecycle(s));
    json_object_set_new(s, "hooks", json_pack("{s:[{s:s}]}", "poststart", "path", "/bin/true"));
    assert_false(rt_spec_fast_lifecycle(s));
    json_object_del(s, "hooks");
    json_object_set_new(path(s, "linux"), "intelRdt", json_object());
    assert_false(rt_spec_fast_lifecycle(s));
    json_object_del(path(s, "linux"), "intelRdt");
    size_t i;
    json_t *n;
    json_array_foreach(path(s, "linux.namespaces"), i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "type")), "pid") == 0)
            json_object_set_new(n, "path", json_string("/proc/1/ns/pid"));
    }
    assert_false(rt_spec_fast_lifecycle(s));
    json_decref(s);
    /* --net-host keeps its own pid namespace; no pid namespace at all does not. */
    s = gen("{\"net_host\": true}");
    assert_true(rt_spec_fast_lifecycle(s));
    json_object_set_new(path(s, "linux"), "namespaces", json_array());
    assert_false(rt_spec_fast_lifecycle(s));
    json_decref(s);
    (void)state;
}

static void test_exec_process(void **state)
{
    json_t *spec = gen("{}");
    mp_t m;
    berth_error_t *err = NULL;
    json_t *p = rt_spec_exec_process(
        spec,
        mp(&m, "{\"args\":[\"ls\",\"-l\"],\"env\":[\"X=1\"],\"terminal\":true,\"user\":\"5:6\"}"),
        &err);
    mp_free(&m);
    assert_non_null(p);
    assert_string_equal(pstr(p, "args.0"), "ls");
    assert_true(json_is_true(json_object_get(p, "terminal")));
    assert_true(has_str(json_object_get(p, "env"), "X=1"));
    assert_true(has_str(json_object_get(p, "env"), "FOO=1"));
    assert_true(has_str(json_object_get(p, "env"), "TERM=xterm"));
    assert_int_equal(json_integer_value(path(p, "user.uid")), 5);
    assert_int_equal(json_integer_value(path(p, "user.gid")), 6);
    /* inherited from the container */
    assert_string_equal(pstr(p, "cwd"), "/work");
    assert_non_null(json_object_get(p, "capabilities"));
    json_decref(p);

    assert_null(rt_spec_exec_process(spec, mp(&m, "{\"args\":[\"ls\"],\"user\":\"alice\"}"), &err));
    mp_free(&m);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
    assert_null(rt_spec_exec_process(spec, mp(&m, "{}"), &err));
    mp_free(&m);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
    json_decref(spec);
    (void)state;
}

static void test_chain_id(void **state)
{
    const char *a = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    json_t *cfg = json_loads(IMAGE_CONFIG, 0, NULL);
    char *out = NULL;
    berth_error_t *err = NULL;
    assert_int_equal(rt_chain_id(cfg, &out, &err), 0);
    assert_string_equal(out, a);
    free(out);
    json_decref(cfg);

    cfg =
        json_loads("{\"rootfs\":{\"diff_ids\":["
                   "\"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
                   "\"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\","
                   "\"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"]}}",
                   0, NULL);
    assert_int_equal(rt_chain_id(cfg, &out, &err), 0);
    assert_string_equal(out,
                        "sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588");
    free(out);
    json_decref(cfg);

    cfg = json_loads("{\"rootfs\":{\"diff_ids\":[\"sha256:xyz\"]}}", 0, NULL);
    assert_int_equal(rt_chain_id(cfg, &out, &err), -1);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
    json_decref(cfg);
    cfg = json_loads("{\"rootfs\":{\"diff_ids\":[]}}", 0, NULL);
    assert_int_equal(rt_chain_id(cfg, &out, &err), -1);
    berth_error_free(&err);
    json_decref(cfg);
    (void)state;
}

static void test_valid_id(void **state)
{
    assert_true(rt_valid_id("c1"));
    assert_true(rt_valid_id("a.b_c-d"));
    assert_false(rt_valid_id(""));
    assert_false(rt_valid_id("-x"));
    assert_false(rt_valid_id("../x"));
    assert_false(rt_valid_id("a/b"));
    assert_false(rt_valid_id(".."));
    char longid[100];
    memset(longid, 'a', 99);
    longid[99] = 0;
    assert_false(rt_valid_id(longid));
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_options),
        cmocka_unit_test(test_privileged),   cmocka_unit_test(test_rlimits),
        cmocka_unit_test(test_bad_options),  cmocka_unit_test(test_seccomp_choices),
        cmocka_unit_test(test_bind_mounts),  cmocka_unit_test(test_user_spec),
        cmocka_unit_test(test_exec_process), cmocka_unit_test(test_chain_id),
        cmocka_unit_test(test_valid_id),     cmocka_unit_test(test_fast_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

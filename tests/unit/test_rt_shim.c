/* SPDX-License-Identifier: Apache-2.0 */
/* berth-shim driven directly, with real runc and a busybox bundle: create,
 * start, stdio through FIFOs, exit records, exec, pause/resume, stats, pids,
 * kill statuses, a TTY, no fd leaks into the container, all output before
 * the exit is reported, rollback when the runtime disappears before
 * confirming, survival of SIGTERM while the container lives, and start and
 * delete without runc ("fast": runc's exec FIFO, cgroups and state).
 * Needs root, runc and busybox-static; skips (77) without them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "berth/mp.h"
#include "exitfile.h"
#include "internal.h"
#include "proto.h"
#include "task.h"

static char tmp[256];
static const char *shim_bin;
static char busybox[256] = "/bin/busybox";
/* Every shim started, killed at the end if a failed test left it running. */
static pid_t shims[64];
static unsigned n_shims;

typedef struct {
    char id[64];
    char bundle[512];
    char fifo_dir[512];
    char *fifos[3];
    pid_t shim_pid;
    shim_client_t c;
    int out_fd, err_fd, in_fd;
} ctr_t;

/* ---- fixture ------------------------------------------------------------------ */

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static void make_rootfs(const char *rootfs)
{
    sh("mkdir -p %s/bin %s/proc %s/dev %s/sys %s/etc %s/tmp && cp %s %s/bin/busybox", rootfs,
       rootfs, rootfs, rootfs, rootfs, rootfs, busybox, rootfs);
    static const char *const applets[] = {"sh",   "echo", "sleep", "cat",  "ls", "tty",
                                          "true", "seq",  "yes",   "head", NULL};
    for (const char *const *a = applets; *a; a++)
        sh("ln -s busybox %s/bin/%s", rootfs, *a);
    sh("printf 'root:x:0:0:root:/root:/bin/sh\\n' > %s/etc/passwd", rootfs);
}

/* Writes a bundle for `args` (a NULL-terminated list) with berth's own spec
 * generator, so the test also proves the generated spec runs under runc. */
static void make_bundle(ctr_t *t, const char *const *args, bool tty)
{
    snprintf(t->bundle, sizeof(t->bundle), "%s/runtime/default/%s", tmp, t->id);
    snprintf(t->fifo_dir, sizeof(t->fifo_dir), "%s/fifo/default/%s", tmp, t->id);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "args");
    size_t n = 0;
    while (args[n])
        n++;
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        berth_mp_pack_str(&b.pk, args[i]);
    berth_mp_kv_bool(&b.pk, "tty", tty);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, b.buf.data, b.buf.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    rt_spec_opts_t o;
    berth_error_t *err = NULL;
    assert_int_equal(rt_spec_opts_from_mp(&up.data, &o, &err), 0);
    rt_host_t host;
    rt_host_probe(&host, false);
    char cg[128];
    snprintf(cg, sizeof(cg), "/berth-test/%s", t->id);
    rt_spec_input_t in = {
        .id = t->id, .ns = "default", .rootfd = -1, .host = &host, .cgroups_path = cg};
    json_t *spec = rt_spec_generate(&in, &o, &err);
    if (!spec)
        fail_msg("spec: %s", err->message);
    char *js = json_dumps(spec, JSON_COMPACT);
    assert_int_equal(rt_bundle_create(t->bundle, js, strlen(js), &err), 0);
    free(js);
    json_decref(spec);
    rt_spec_opts_free(&o);
    rt_host_clear(&host);
    msgpack_unpacked_destroy(&up);
    berth_mpbuf_destroy(&b);
    char rootfs[600];
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", t->bundle);
    make_rootfs(rootfs);
}

static void start_shim(ctr_t *t, int exit_wait_ms)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    char syncfd[16], wait_ms[16], root[400];
    snprintf(root, sizeof(root), "%s/runc/default", tmp);
    snprintf(wait_ms, sizeof(wait_ms), "%d", exit_wait_ms);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = dup(p[1]); /* without CLOEXEC */
        snprintf(syncfd, sizeof(syncfd), "%d", fd);
        execl(shim_bin, shim_bin, "--id", t->id, "--namespace", "default", "--bundle", t->bundle,
              "--runtime", "runc", "--runtime-root", root, "--sync-fd", syncfd, "--exit-wait-ms",
              wait_ms, "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    int st;
    waitpid(pid, &st, 0); /* the first process exits at once (daemonizing) */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char line[256] = "";
    ssize_t n = read(p[0], line, sizeof(line) - 1);
    close(p[0]);
    assert_true(n > 0);
    line[n] = 0;
    if (strncmp(line, "ok ", 3) != 0)
        fail_msg("shim did not start: %s", line);
    t->shim_pid = atoi(line + 3);
    assert_true(t->shim_pid > 1);
    if (n_shims < BERTH_ARRAY_SIZE(shims))
        shims[n_shims++] = t->shim_pid;
    char sock[700];
    snprintf(sock, sizeof(sock), "%s/shim.sock", t->bundle);
    berth_error_t *err = NULL;
    if (shim_client_connect(&t->c, sock, &err) < 0)
        fail_msg("connect: %s", err->message);
    struct stat sst;
    assert_int_equal(stat(sock, &sst), 0);
    assert_int_equal(sst.st_mode & 0777, 0600);
}

static const msgpack_object *call(ctr_t *t, const char *method, berth_mpbuf_t *params,
                                  berth_error_t **err)
{
    const msgpack_object *res = NULL;
    int r = shim_client_call(&t->c, method, params ? params->buf.data : NULL,
                             params ? params->buf.size : 0, 10000, &res, err);
    if (params)
        berth_mpbuf_destroy(params);
    return r == 0 ? res : NULL;
}

static const msgpack_object *call_ok(ctr_t *t, const char *method, berth_mpbuf_t *params)
{
    berth_error_t *err = NULL;
    const msgpack_object *r = call(t, method, params, &err);
    if (!r) {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "tail -n 30 %s/shim.log >&2", t->bundle);
        if (system(cmd) != 0)
            fprintf(stderr, "no shim log\n");
        fail_msg("%s failed: %s", method, err->message);
    }
    return r;
}

static berth_mpbuf_t *params(berth_mpbuf_t *b, uint32_t n)
{
    berth_mpbuf_init(b);
    msgpack_pack_map(&b->pk, n);
    return b;
}

static int64_t get_i64(const msgpack_object *o, const char *k)
{
    int64_t v = -1;
    berth_mp_get_i64(o, k, &v, NULL);
    return v;
}

/* create + confirm with FIFOs for stdout/stderr (and stdin if asked). */
static pid_t create(ctr_t *t, bool with_stdin, bool tty)
{
    const bool want[3] = {with_stdin, true, !tty};
    berth_error_t *err = NULL;
    assert_int_equal(rt_fifos_create(t->fifo_dir, "init", want, t->fifos, &err), 0);
    /* Open the read sides like a client does. */
    t->out_fd = open(t->fifos[1], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    t->err_fd = t->fifos[2] ? open(t->fifos[2], O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
    t->in_fd = -1;
    berth_mpbuf_t b;
    params(&b, 4);
    berth_mp_kv_bool(&b.pk, "terminal", tty);
    berth_mp_kv_str(&b.pk, "stdin", t->fifos[0] ? t->fifos[0] : "");
    berth_mp_kv_str(&b.pk, "stdout", t->fifos[1]);
    berth_mp_kv_str(&b.pk, "stderr", t->fifos[2] ? t->fifos[2] : "");
    const msgpack_object *r = call_ok(t, "create", &b);
    pid_t pid = (pid_t)get_i64(r, "pid");
    assert_true(pid > 1);
    call_ok(t, "confirm", NULL);
    if (with_stdin) {
        t->in_fd = open(t->fifos[0], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        assert_true(t->in_fd >= 0);
    }
    return pid;
}

/* Reads the FIFO until EOF (bounded). */
static size_t drain(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t have = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            break;
        ssize_t n = read(fd, buf + have, cap - 1 - have);
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        if (have >= cap - 1)
            break;
    }
    buf[have] = 0;
    return have;
}

static int wait_exit(ctr_t *t, const char *exec_id)
{
    berth_mpbuf_t b;
    params(&b, 1);
    berth_mp_kv_str(&b.pk, "exec_id", exec_id ? exec_id : "");
    const msgpack_object *r = call_ok(t, "wait", &b);
    return (int)get_i64(r, "exit_status");
}

/* Whether pid still runs. A zombie does not: an exited shim is reparented
 * to PID 1 (or a subreaper), which may reap it late (this VM's init does),
 * and kill(pid, 0) succeeds on a zombie. */
static bool pid_alive(pid_t pid)
{
    if (kill(pid, 0) < 0)
        return false;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    const char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

/* Waits up to ms for pid to exit; true when it did. */
static bool wait_gone(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10 && pid_alive(pid); i++)
        usleep(10000);
    return !pid_alive(pid);
}

/* want_status -2: the task was deleted already, only clean up. */
static void delete_task(ctr_t *t, int want_status)
{
    if (want_status != -2) {
        const msgpack_object *r = call_ok(t, "delete", NULL);
        assert_int_equal(get_i64(r, "exit_status"), want_status);
    }
    /* the shim exits after delete */
    assert_true(wait_gone(t->shim_pid, 5000));
    shim_client_close(&t->c);
    if (t->out_fd >= 0)
        close(t->out_fd);
    if (t->err_fd >= 0)
        close(t->err_fd);
    if (t->in_fd >= 0)
        close(t->in_fd);
    rt_fifos_remove(t->fifos);
    berth_error_t *err = NULL;
    rt_remove_tree(t->bundle, &err);
    berth_error_free(&err);
}

static ctr_t *new_ctr(const char *id)
{
    ctr_t *t = calloc(1, sizeof(*t));
    snprintf(t->id, sizeof(t->id), "%s", id);
    t->out_fd = t->err_fd = t->in_fd = -1;
    return t;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_echo_and_exit_record(void **state)
{
    ctr_t *t = new_ctr("echo1");
    const char *args[] = {"/bin/sh", "-c", "echo hello; echo oops >&2; exit 7", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    pid_t pid = create(t, false, false);

    /* a second connection subscribes to events */
    shim_client_t ev;
    char sock[700];
    snprintf(sock, sizeof(sock), "%s/shim.sock", t->bundle);
    berth_error_t *err = NULL;
    assert_int_equal(shim_client_connect(&ev, sock, &err), 0);
    uint32_t evid;
    assert_int_equal(shim_client_send(&ev, "events", NULL, 0, &evid, &err), 0);

    const msgpack_object *r = call_ok(t, "state", NULL);
    const msgpack_object *init = berth_mp_get(r, "init");
    assert_true(berth_mp_str_eq(berth_mp_get(init, "status"), "created"));
    assert_int_equal(get_i64(init, "pid"), pid);

    berth_mpbuf_t b;
    r = call_ok(t, "start", params(&b, 0));
    assert_int_equal(get_i64(r, "pid"), pid);
    assert_int_equal(wait_exit(t, NULL), 7);

    /* the exit event arrives on the subscription */
    const msgpack_object *data = NULL;
    assert_int_equal(shim_client_wait(&ev, evid, 5000, NULL, &data, &err), 1);
    assert_true(berth_mp_str_eq(berth_mp_get(data, "type"), "exit"));
    assert_int_equal(get_i64(data, "exit_status"), 7);

    char out[256];
    drain(t->out_fd, out, sizeof(out), 2000);
    assert_string_equal(out, "hello\n");
    drain(t->err_fd, out, sizeof(out), 2000);
    assert_string_equal(out, "oops\n");

    /* recorded on disk, not yet published */
    int bfd = open(t->bundle, O_RDONLY | O_DIRECTORY);
    shim_exit_t e;
    assert_int_equal(shim_exit_read(bfd, NULL, &e, &err), 0);
    assert_int_equal(e.status, 7);
    assert_int_equal(e.pid, pid);
    assert_false(e.published);
    call_ok(t, "exit_published", params(&b, 0));
    assert_int_equal(shim_exit_read(bfd, NULL, &e, &err), 0);
    assert_true(e.published);
    close(bfd);

    /* kill after exit: not found */
    params(&b, 1);
    berth_mp_kv_u64(&b.pk, "signal", 9);
    assert_null(call(t, "kill", &b, &err));
    assert_int_equal(err->code, BERTH_E_NOT_FOUND);
    berth_error_free(&err);

    shim_client_close(&ev);
    delete_task(t, 7);
    free(t);
    (void)state;
}

static void test_sleep_exec_pause_stats_kill(void **state)
{
    ctr_t *t = new_ctr("sleep1");
    const char *args[] = {"/bin/sleep", "60", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    pid_t pid = create(t, false, false);
    berth_mpbuf_t b;
    call_ok(t, "start", params(&b, 0));
    const msgpack_object *r = call_ok(t, "state", NULL);
    assert_true(berth_mp_str_eq(berth_mp_get(berth_mp_get(r, "init"), "status"), "running"));

    /* exec */
    char *xf[3];
    const bool want[3] = {true, true, false};
    berth_error_t *err = NULL;
    assert_int_equal(rt_fifos_create(t->fifo_dir, "x1", want, xf, &err), 0);
    int xout = open(xf[1], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    const char *proc = "{\"args\":[\"/bin/sh\",\"-c\",\"echo from-exec; exit 3\"],\"cwd\":\"/\","
                       "\"env\":[\"PATH=/bin\"],\"user\":{\"uid\":0,\"gid\":0}}";
    params(&b, 6);
    berth_mp_kv_str(&b.pk, "exec_id", "x1");
    berth_mp_pack_str(&b.pk, "process");
    berth_mp_pack_bin(&b.pk, proc, strlen(proc));
    berth_mp_kv_bool(&b.pk, "terminal", false);
    berth_mp_kv_str(&b.pk, "stdin", xf[0]);
    berth_mp_kv_str(&b.pk, "stdout", xf[1]);
    berth_mp_kv_str(&b.pk, "stderr", "");
    call_ok(t, "exec", &b);
    /* A client opens the exec's stdin before it starts: the shim already
     * holds the FIFO's read end. */
    int xin = open(xf[0], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(xin >= 0);
    close(xin);
    /* duplicate exec id */
    params(&b, 2);
    berth_mp_kv_str(&b.pk, "exec_id", "x1");
    berth_mp_pack_str(&b.pk, "process");
    berth_mp_pack_bin(&b.pk, proc, strlen(proc));
    assert_null(call(t, "exec", &b, &err));
    assert_int_equal(err->code, BERTH_E_ALREADY_EXISTS);
    berth_error_free(&err);
    params(&b, 1);
    berth_mp_kv_str(&b.pk, "exec_id", "x1");
    r = call_ok(t, "start", &b);
    assert_true(get_i64(r, "pid") > 1);
    assert_int_equal(wait_exit(t, "x1"), 3);
    char out[256];
    drain(xout, out, sizeof(out), 2000);
    assert_string_equal(out, "from-exec\n");
    close(xout);
    params(&b, 1);
    berth_mp_kv_str(&b.pk, "exec_id", "x1");
    r = call_ok(t, "delete", &b);
    assert_int_equal(get_i64(r, "exit_status"), 3);
    rt_fifos_remove(xf);

    /* pids */
    r = call_ok(t, "pids", NULL);
    const msgpack_object *pids = berth_mp_get(r, "pids");
    assert_true(pids && pids->type == MSGPACK_OBJECT_ARRAY && pids->via.array.size >= 1);
    assert_int_equal(get_i64(&pids->via.array.ptr[0], "pid"), pid);

    /* stats */
    r = call_ok(t, "stats", NULL);
    assert_true(get_i64(berth_mp_get(r, "memory"), "usage") > 0);
    assert_int_equal(get_i64(berth_mp_get(r, "pids"), "current"), 1);

    /* pause / resume */
    call_ok(t, "pause", NULL);
    r = call_ok(t, "state", NULL);
    assert_true(berth_mp_str_eq(berth_mp_get(berth_mp_get(r, "init"), "status"), "paused"));
    assert_null(call(t, "pause", NULL, &err));
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
    call_ok(t, "resume", NULL);
    r = call_ok(t, "state", NULL);
    assert_true(berth_mp_str_eq(berth_mp_get(berth_mp_get(r, "init"), "status"), "running"));

    /* delete while running is refused */
    assert_null(call(t, "delete", NULL, &err));
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);

    /* SIGTERM to the shim while the container lives: ignored */
    kill(t->shim_pid, SIGTERM);
    usleep(100000);
    assert_int_equal(kill(t->shim_pid, 0), 0);
    call_ok(t, "state", NULL);

    params(&b, 1);
    berth_mp_kv_u64(&b.pk, "signal", SIGTERM);
    call_ok(t, "kill", &b);
    /* sleep as pid 1 ignores SIGTERM (no handler, init): use KILL after */
    usleep(200000);
    r = call_ok(t, "state", NULL);
    if (!berth_mp_str_eq(berth_mp_get(berth_mp_get(r, "init"), "status"), "stopped")) {
        params(&b, 2);
        berth_mp_kv_u64(&b.pk, "signal", SIGKILL);
        berth_mp_kv_bool(&b.pk, "all", true);
        call_ok(t, "kill", &b);
        assert_int_equal(wait_exit(t, NULL), 137);
        delete_task(t, 137);
    } else {
        assert_int_equal(wait_exit(t, NULL), 143);
        delete_task(t, 143);
    }
    free(t);
    (void)state;
}

/* sh traps TERM → exit 143 like the e2e expects for `sleep` under a shell. */
static void test_kill_term_143(void **state)
{
    ctr_t *t = new_ctr("term1");
    const char *args[] = {"/bin/sh", "-c", "trap 'exit 143' TERM; sleep 60 & wait", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    create(t, false, false);
    berth_mpbuf_t b;
    call_ok(t, "start", params(&b, 0));
    usleep(100000);
    params(&b, 1);
    berth_mp_kv_u64(&b.pk, "signal", SIGTERM);
    call_ok(t, "kill", &b);
    assert_int_equal(wait_exit(t, NULL), 143);
    delete_task(t, 143);
    free(t);
    (void)state;
}

/* Lots of output: every line is in the FIFO before the exit is reported. */
static void test_output_before_exit(void **state)
{
    ctr_t *t = new_ctr("flood1");
    const char *args[] = {"/bin/sh", "-c", "seq 1 20000", NULL};
    make_bundle(t, args, false);
    start_shim(t, 5000);
    create(t, false, false);
    shim_client_t ev;
    char sock[700];
    snprintf(sock, sizeof(sock), "%s/shim.sock", t->bundle);
    berth_error_t *err = NULL;
    assert_int_equal(shim_client_connect(&ev, sock, &err), 0);
    uint32_t evid;
    assert_int_equal(shim_client_send(&ev, "events", NULL, 0, &evid, &err), 0);
    berth_mpbuf_t b;
    call_ok(t, "start", params(&b, 0));
    size_t cap = 1 << 20, have = 0;
    char *buf = malloc(cap);
    bool exited = false;
    while (!exited) {
        struct pollfd p[2] = {{.fd = t->out_fd, .events = POLLIN}, {.fd = ev.fd, .events = POLLIN}};
        assert_true(poll(p, 2, 5000) > 0);
        if (p[0].revents & POLLIN) {
            ssize_t n = read(t->out_fd, buf + have, cap - have);
            if (n > 0)
                have += (size_t)n;
        }
        if (p[1].revents & POLLIN) {
            const msgpack_object *data = NULL;
            assert_int_equal(shim_client_wait(&ev, evid, 1000, NULL, &data, &err), 1);
            exited = berth_mp_str_eq(berth_mp_get(data, "type"), "exit");
        }
    }
    /* After the exit event, what remains is already in the FIFO: read it
     * without waiting for anything else. */
    for (;;) {
        ssize_t n = read(t->out_fd, buf + have, cap - have);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    buf[have] = 0;
    size_t lines = 0;
    for (size_t i = 0; i < have; i++)
        lines += buf[i] == '\n';
    assert_int_equal(lines, 20000);
    assert_non_null(strstr(buf, "\n20000\n"));
    free(buf);
    shim_client_close(&ev);
    delete_task(t, 0);
    free(t);
    (void)state;
}

static void test_stdin(void **state)
{
    ctr_t *t = new_ctr("cat1");
    const char *args[] = {"/bin/cat", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    create(t, true, false);
    berth_mpbuf_t b;
    call_ok(t, "start", params(&b, 0));
    assert_int_equal(write(t->in_fd, "ping\n", 5), 5);
    close(t->in_fd); /* EOF on the FIFO closes the container's stdin */
    t->in_fd = -1;
    assert_int_equal(wait_exit(t, NULL), 0);
    char out[64];
    drain(t->out_fd, out, sizeof(out), 2000);
    assert_string_equal(out, "ping\n");
    delete_task(t, 0);
    free(t);
    (void)state;
}

static void test_tty(void **state)
{
    ctr_t *t = new_ctr("tty1");
    const char *args[] = {"/bin/sh", "-c", "tty; exit 0", NULL};
    make_bundle(t, args, true);
    start_shim(t, 2000);
    create(t, false, true);
    berth_mpbuf_t b;
    params(&b, 2);
    berth_mp_kv_u64(&b.pk, "width", 100);
    berth_mp_kv_u64(&b.pk, "height", 40);
    call_ok(t, "resize", &b);
    call_ok(t, "start", params(&b, 0));
    assert_int_equal(wait_exit(t, NULL), 0);
    char out[256];
    drain(t->out_fd, out, sizeof(out), 2000);
    if (!strstr(out, "/dev/pts/"))
        fail_msg("tty output: %s", out);
    delete_task(t, 0);
    free(t);
    (void)state;
}

/* CVE-2024-21626 class: the container's init holds only 0, 1 and 2 (looked
 * at from the host, so the observer adds no fd of its own). */
static void test_no_fd_leak(void **state)
{
    ctr_t *t = new_ctr("fds1");
    const char *args[] = {"/bin/sleep", "60", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    pid_t pid = create(t, false, false);
    berth_mpbuf_t b;
    call_ok(t, "start", params(&b, 0));
    usleep(50000);
    char cmd[128], out[256];
    snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd | tr '\\n' ' '", (int)pid);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = 0;
    pclose(f);
    assert_string_equal(out, "0 1 2 ");
    params(&b, 1);
    berth_mp_kv_u64(&b.pk, "signal", SIGKILL);
    call_ok(t, "kill", &b);
    assert_int_equal(wait_exit(t, NULL), 137);
    delete_task(t, 137);
    free(t);
    (void)state;
}

/* The runtime disappears between create and confirm: nothing is left. */
static void test_rollback_without_confirm(void **state)
{
    ctr_t *t = new_ctr("rb1");
    const char *args[] = {"/bin/sleep", "60", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    const bool want[3] = {false, true, false};
    berth_error_t *err = NULL;
    assert_int_equal(rt_fifos_create(t->fifo_dir, "init", want, t->fifos, &err), 0);
    berth_mpbuf_t b;
    params(&b, 2);
    berth_mp_kv_bool(&b.pk, "terminal", false);
    berth_mp_kv_str(&b.pk, "stdout", t->fifos[1]);
    const msgpack_object *r = call_ok(t, "create", &b);
    pid_t pid = (pid_t)get_i64(r, "pid");
    assert_int_equal(kill(pid, 0), 0);
    shim_client_close(&t->c); /* no confirm */
    assert_true(wait_gone(t->shim_pid, 5000));
    assert_true(wait_gone(pid, 2000));
    assert_int_equal(access(t->bundle, F_OK), -1);
    assert_int_equal(access(t->fifos[1], F_OK), -1);
    char state_dir[600];
    snprintf(state_dir, sizeof(state_dir), "%s/runc/default/%s", tmp, t->id);
    assert_int_equal(access(state_dir, F_OK), -1);
    for (int i = 0; i < 3; i++)
        free(t->fifos[i]);
    free(t);
    (void)state;
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* create with "fast": start reads runc's exec FIFO and delete removes the
 * cgroups and runc's state without running runc; same results as runc. */
static pid_t create_fast(ctr_t *t)
{
    const bool want[3] = {false, true, false};
    berth_error_t *err = NULL;
    assert_int_equal(rt_fifos_create(t->fifo_dir, "init", want, t->fifos, &err), 0);
    t->out_fd = open(t->fifos[1], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    berth_mpbuf_t b;
    params(&b, 3);
    berth_mp_kv_bool(&b.pk, "terminal", false);
    berth_mp_kv_str(&b.pk, "stdout", t->fifos[1]);
    berth_mp_kv_bool(&b.pk, "fast", true);
    const msgpack_object *r = call_ok(t, "create", &b);
    pid_t pid = (pid_t)get_i64(r, "pid");
    assert_true(pid > 1);
    call_ok(t, "confirm", NULL);
    return pid;
}

static void test_fast_start_delete(void **state)
{
    ctr_t *t = new_ctr("fast1");
    const char *args[] = {"/bin/sh", "-c", "echo fast; exit 3", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    pid_t pid = create_fast(t);
    char sdir[600], fifo[700], log[700], cg[700];
    snprintf(sdir, sizeof(sdir), "%s/runc/default/%s", tmp, t->id);
    snprintf(fifo, sizeof(fifo), "%s/exec.fifo", sdir);
    snprintf(log, sizeof(log), "%s/shim.log", t->bundle);
    snprintf(cg, sizeof(cg), "/sys/fs/cgroup/pids/berth-test/%s", t->id);
    bool v1 = access("/sys/fs/cgroup/pids", F_OK) == 0;
    if (!v1)
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/berth-test/%s", t->id);
    assert_int_equal(access(fifo, F_OK), 0);
    assert_int_equal(access(cg, F_OK), 0);
    berth_mpbuf_t b;
    const msgpack_object *r = call_ok(t, "start", params(&b, 0));
    assert_int_equal(get_i64(r, "pid"), pid);
    assert_true(file_has(log, "started without runc"));
    assert_int_equal(access(fifo, F_OK), -1); /* runc's "running" */
    assert_int_equal(wait_exit(t, NULL), 3);
    char out[64];
    drain(t->out_fd, out, sizeof(out), 2000);
    assert_string_equal(out, "fast\n");
    r = call_ok(t, "delete", NULL);
    assert_int_equal(get_i64(r, "exit_status"), 3);
    assert_true(file_has(log, "deleted without runc"));
    assert_int_equal(access(sdir, F_OK), -1);
    assert_int_equal(access(cg, F_OK), -1);
    delete_task(t, -2); /* already deleted: only waits for the shim and cleans up */
    free(t);

    /* An init that dies before start: runc's own answer, then a clean delete. */
    t = new_ctr("fast2");
    const char *args2[] = {"/bin/sleep", "60", NULL};
    make_bundle(t, args2, false);
    start_shim(t, 2000);
    pid = create_fast(t);
    assert_int_equal(kill(pid, SIGKILL), 0);
    berth_error_t *err = NULL;
    assert_null(call(t, "start", params(&b, 0), &err));
    assert_non_null(strstr(err->message, "already dead"));
    berth_error_free(&err);
    r = call_ok(t, "delete", NULL);
    assert_int_equal(get_i64(r, "exit_status"), 137);
    snprintf(sdir, sizeof(sdir), "%s/runc/default/%s", tmp, t->id);
    assert_int_equal(access(sdir, F_OK), -1);
    delete_task(t, -2);
    free(t);
    (void)state;
}

/* A create that runc refuses reports runc's own error. */
static void test_create_error(void **state)
{
    ctr_t *t = new_ctr("bad1");
    const char *args[] = {"/no/such/binary", NULL};
    make_bundle(t, args, false);
    start_shim(t, 2000);
    berth_mpbuf_t b;
    params(&b, 1);
    berth_mp_kv_bool(&b.pk, "terminal", false);
    berth_error_t *err = NULL;
    const msgpack_object *r = call(t, "create", &b, &err);
    if (r) {
        /* runc 1.1 reports a missing binary at start, not create. */
        assert_null(call(t, "start", params(&b, 0), &err));
        assert_non_null(strstr(err->message, "no such file"));
        berth_error_free(&err);
        call_ok(t, "delete", NULL);
    } else {
        assert_non_null(strstr(err->message, "runc create"));
        berth_error_free(&err);
    }
    assert_true(wait_gone(t->shim_pid, 5000));
    shim_client_close(&t->c);
    rt_remove_tree(t->bundle, &err);
    berth_error_free(&err);
    free(t);
    (void)state;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_rt_shim needs root (runc): skipped\n");
        return 77;
    }
    if (system("command -v runc >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_rt_shim needs runc (scripts/install-deps.sh): skipped\n");
        return 77;
    }
    if (access(busybox, X_OK) != 0) {
        fprintf(stderr, "test_rt_shim needs busybox-static: skipped\n");
        return 77;
    }
    shim_bin = getenv("BERTH_SHIM");
    if (!shim_bin) {
        fprintf(stderr, "set BERTH_SHIM to the berth-shim binary\n");
        return 1;
    }
    snprintf(tmp, sizeof(tmp), "/tmp/berth-shim-XXXXXX");
    if (!mkdtemp(tmp))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_and_exit_record),
        cmocka_unit_test(test_sleep_exec_pause_stats_kill),
        cmocka_unit_test(test_kill_term_143),
        cmocka_unit_test(test_output_before_exit),
        cmocka_unit_test(test_stdin),
        cmocka_unit_test(test_tty),
        cmocka_unit_test(test_no_fd_leak),
        cmocka_unit_test(test_rollback_without_confirm),
        cmocka_unit_test(test_create_error),
        cmocka_unit_test(test_fast_start_delete),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (unsigned i = 0; i < n_shims; i++)
        kill(shims[i], SIGKILL);
    char cmd[4096];
    snprintf(
        cmd, sizeof(cmd),
        "for d in %s/runc/default/*; do [ -d \"$d\" ] && runc --root %s/runc/default delete -f "
        "\"$(basename \"$d\")\" >/dev/null 2>&1; done; "
        "grep -q ' %s/' /proc/self/mountinfo && umount -R %s 2>/dev/null; rm -rf %s; "
        "for c in /sys/fs/cgroup/*/berth-test; do rmdir \"$c\"/* \"$c\" 2>/dev/null; done; true",
        tmp, tmp, tmp, tmp, tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    return rc;
}

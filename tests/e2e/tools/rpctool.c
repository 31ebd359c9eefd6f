/* SPDX-License-Identifier: Apache-2.0 */
/* berth-rpctool: a raw msgpack-RPC client for e2e tests and benchmarks,
 * independent of libberth and the CLI.
 *   berth-rpctool -a SOCK call METHOD [JSON-PARAMS]
 *       one call; prints the result as JSON; on error prints "code: message"
 *       to stderr and exits 1.
 *   berth-rpctool -a SOCK load METHOD N DEPTH [JSON-PARAMS]
 *       N calls on one connection with DEPTH in flight; prints
 *       "ok=.. failed=.. seconds=.. rate=.." and error counts; exits 1 if any
 *       call failed.
 *   berth-rpctool -a SOCK lat METHOD N [JSON-PARAMS]
 *       N sequential round trips; prints median/p99 in microseconds.
 *   berth-rpctool -p PLUGIN-BINARY load|lat METHOD ...
 *       the same, but straight to a plugin this tool starts itself on a
 *       socketpair (fd 3), answering its registration: no berthd in between.
 *       Benchmarks subtract this from the figures through berthd to get the
 *       cost of the core hop. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "msg.h"

static int fd = -1;
static uint8_t *rbuf;
static size_t rlen, rcap;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "berth-rpctool: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static void to_mp(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            berth_mp_pack_str(pk, k);
            to_mp(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) to_mp(pk, v);
        break;
    }
    case JSON_STRING:
        berth_mp_pack_strn(pk, json_string_value(j), json_string_length(j));
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

static json_t *to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: {
        char b[64];
        snprintf(b, sizeof(b), "<%u bytes>", o->via.bin.size);
        return json_string(b);
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            char key[256];
            if (k->type == MSGPACK_OBJECT_STR)
                snprintf(key, sizeof(key), "%.*s", (int)k->via.str.size, k->via.str.ptr);
            else
                snprintf(key, sizeof(key), "?");
            json_object_set_new(m, key, to_json(&o->via.map.ptr[i].val));
        }
        return m;
    }
    default:
        return json_null();
    }
}

static pid_t plugin_pid;

static void stop_plugin(void)
{
    if (plugin_pid > 0) {
        kill(plugin_pid, SIGTERM);
        waitpid(plugin_pid, NULL, 0);
    }
}

static ipc_msg_t *read_msg(void);
static void pack_request(msgpack_sbuffer *sb, uint32_t id, const char *method, const char *params,
                         size_t plen);

/* Starts a plugin with one end of a socketpair as fd 3 and plays berthd's
 * part of the handshake (plugin.register, plugin.ready). */
static void spawn_plugin(const char *bin)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    char root[] = "/tmp/berth-rpctool.XXXXXX";
    if (!mkdtemp(root))
        die("mkdtemp: %s", strerror(errno));
    plugin_pid = fork();
    if (plugin_pid == 0) {
        close(sv[0]); /* first: it may be fd 3 */
        if (sv[1] != 3) {
            dup2(sv[1], 3);
            close(sv[1]);
        }
        setenv("BERTH_PLUGIN_FD", "3", 1);
        execl(bin, bin, "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    fd = sv[0];
    atexit(stop_plugin);
    for (int ready = 0; ready < 2;) {
        ipc_msg_t *m = read_msg();
        if (!m)
            die("plugin %s exited during registration", bin);
        if (m->type != IPC_REQUEST) {
            ipc_msg_free(m);
            continue;
        }
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        uint8_t hdr[4] = {0};
        msgpack_sbuffer_write(&sb, (const char *)hdr, 4);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        ipc_pack_response_ok_head(&pk, m->msgid);
        if (strcmp(m->method, "plugin.register") == 0) {
            msgpack_pack_map(&pk, 4);
            berth_mp_pack_str(&pk, "config");
            msgpack_pack_map(&pk, 0);
            berth_mp_kv_str(&pk, "root", root);
            berth_mp_kv_str(&pk, "state", root);
            berth_mp_pack_str(&pk, "daemon");
            msgpack_pack_map(&pk, 2);
            berth_mp_kv_str(&pk, "version", "rpctool");
            berth_mp_kv_u64(&pk, "pid", (uint64_t)getpid());
            ready++;
        } else {
            msgpack_pack_map(&pk, 0);
            if (strcmp(m->method, "plugin.ready") == 0)
                ready++;
        }
        ipc_frame_header((uint8_t *)sb.data, (uint32_t)(sb.size - 4));
        if (write(fd, sb.data, sb.size) != (ssize_t)sb.size)
            die("%s", "write to plugin failed");
        msgpack_sbuffer_destroy(&sb);
        ipc_msg_free(m);
    }
}

static void connect_to(const char *path)
{
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect: %s", strerror(errno));
}

static void write_all(const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write: %s", strerror(errno));
        }
        b += w;
        n -= (size_t)w;
    }
}

/* Appends one request frame to sb. */
static void pack_request(msgpack_sbuffer *sb, uint32_t id, const char *method, const char *params,
                         size_t plen)
{
    size_t at = sb->size;
    uint8_t hdr[4] = {0};
    msgpack_sbuffer_write(sb, (const char *)hdr, 4);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    ipc_pack_request_head(&pk, id, method);
    msgpack_sbuffer_write(sb, params, plen);
    ipc_frame_header((uint8_t *)sb->data + at, (uint32_t)(sb->size - at - 4));
}

/* Reads the next message (blocking). NULL at EOF. */
static ipc_msg_t *read_msg(void)
{
    for (;;) {
        if (rlen >= 4) {
            uint32_t n = ((uint32_t)rbuf[0] << 24) | ((uint32_t)rbuf[1] << 16) |
                         ((uint32_t)rbuf[2] << 8) | rbuf[3];
            if (rlen >= 4 + (size_t)n) {
                uint8_t *payload = malloc(n ? n : 1);
                memcpy(payload, rbuf + 4, n);
                memmove(rbuf, rbuf + 4 + n, rlen - 4 - n);
                rlen -= 4 + n;
                ipc_msg_t *m = NULL;
                uint32_t mid;
                bool have;
                berth_error_t *err = NULL;
                if (ipc_msg_decode(payload, n, &berth_mp_default_limits, &m, &mid, &have, &err) < 0)
                    die("bad message from server: %s", err->message);
                return m;
            }
            if (rcap < 4 + (size_t)n) {
                rcap = 4 + (size_t)n;
                rbuf = realloc(rbuf, rcap);
            }
        }
        if (rcap - rlen < 65536) {
            rcap = rlen + 65536;
            rbuf = realloc(rbuf, rcap);
        }
        ssize_t r = read(fd, rbuf + rlen, rcap - rlen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        rlen += (size_t)r;
    }
}

/* Acks stream chunks so streaming servers keep going. */
static void ack(uint32_t id)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint8_t hdr[4] = {0};
    msgpack_sbuffer_write(&sb, (const char *)hdr, 4);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    ipc_pack_ack(&pk, id, 1, false);
    ipc_frame_header((uint8_t *)sb.data, (uint32_t)(sb.size - 4));
    write_all(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *addr = getenv("BERTH_ADDRESS");
    const char *plugin_bin = NULL;
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "-a") == 0) {
        addr = argv[i + 1];
        i += 2;
    } else if (i + 1 < argc && strcmp(argv[i], "-p") == 0) {
        plugin_bin = argv[i + 1];
        i += 2;
    }
    if ((!addr && !plugin_bin) || i + 1 >= argc) {
        fprintf(stderr, "usage: berth-rpctool -a SOCK call|load|lat METHOD [N [DEPTH]] [JSON]\n");
        return 2;
    }
    const char *mode = argv[i++];
    const char *method = argv[i++];
    size_t n = 1, depth = 1;
    if (strcmp(mode, "load") == 0) {
        if (i + 1 >= argc)
            die("%s", "load needs N and DEPTH");
        n = strtoull(argv[i++], NULL, 10);
        depth = strtoull(argv[i++], NULL, 10);
    } else if (strcmp(mode, "lat") == 0) {
        if (i >= argc)
            die("%s", "lat needs N");
        n = strtoull(argv[i++], NULL, 10);
    } else if (strcmp(mode, "call") != 0) {
        die("unknown mode %s", mode);
    }
    if (!n || !depth)
        die("%s", "N and DEPTH must be positive");
    json_t *pj = NULL;
    if (i < argc) {
        json_error_t je;
        pj = json_loads(argv[i], 0, &je);
        if (!pj || !json_is_object(pj))
            die("params must be a JSON object: %s", argv[i]);
    }
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    msgpack_packer ppk;
    msgpack_packer_init(&ppk, &params, msgpack_sbuffer_write);
    if (pj)
        to_mp(&ppk, pj);
    else
        msgpack_pack_map(&ppk, 0);
    signal(SIGPIPE, SIG_IGN);
    if (plugin_bin)
        spawn_plugin(plugin_bin);
    else
        connect_to(addr);

    if (strcmp(mode, "call") == 0) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pack_request(&sb, 1, method, params.data, params.size);
        write_all(sb.data, sb.size);
        for (;;) {
            ipc_msg_t *m = read_msg();
            if (!m) {
                fprintf(stderr, "unavailable: connection closed by berthd\n");
                return 1;
            }
            if (m->type == IPC_NOTIFY && strcmp(m->method, "$stream") == 0) {
                json_t *j = to_json(berth_mp_get(m->params, "data"));
                char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
                printf("stream: %s\n", s);
                fflush(stdout);
                free(s);
                json_decref(j);
                ack(1);
            } else if (m->type == IPC_RESPONSE && m->msgid == 1) {
                if (m->error) {
                    fprintf(stderr, "%s: %s\n", berth_code_name(m->code), m->message);
                    return 1;
                }
                json_t *j = to_json(m->result);
                char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
                printf("%s\n", s);
                return 0;
            }
            ipc_msg_free(m);
        }
    }

    uint64_t *lat = calloc(n, sizeof(*lat));
    uint64_t *sent_at = calloc(n + 1, sizeof(*sent_at));
    size_t sent = 0, done = 0, failed = 0;
    char codes[16][48];
    size_t code_n[16] = {0}, ncodes = 0;
    char first_err[512] = "";
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t t0 = now_ns();
    while (done < n) {
        sb.size = 0;
        while (sent < n && sent - done < depth) {
            sent++;
            sent_at[sent] = now_ns();
            pack_request(&sb, (uint32_t)sent, method, params.data, params.size);
        }
        if (sb.size)
            write_all(sb.data, sb.size);
        ipc_msg_t *m = read_msg();
        if (!m) {
            failed += n - done;
            snprintf(first_err, sizeof(first_err), "connection closed by berthd after %zu", done);
            break;
        }
        if (m->type == IPC_RESPONSE && m->msgid >= 1 && m->msgid <= sent) {
            lat[done] = now_ns() - sent_at[m->msgid];
            done++;
            if (done == 1) {
                /* Tests wait for this line to know requests are flowing. */
                fprintf(stderr, "load: first response\n");
                fflush(stderr);
            }
            if (m->error) {
                failed++;
                const char *cn = berth_code_name(m->code);
                size_t k;
                for (k = 0; k < ncodes && strcmp(codes[k], cn); k++)
                    ;
                if (k == ncodes && ncodes < 16)
                    snprintf(codes[ncodes++], sizeof(codes[0]), "%s", cn);
                if (k < 16)
                    code_n[k]++;
                if (!first_err[0])
                    snprintf(first_err, sizeof(first_err), "%s: %s", cn, m->message);
            }
        } else if (m->type == IPC_NOTIFY && strcmp(m->method, "$stream") == 0) {
            uint64_t id = 0;
            berth_mp_get_u64(m->params, "id", &id, NULL);
            ack((uint32_t)id);
        }
        ipc_msg_free(m);
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    if (strcmp(mode, "lat") == 0) {
        qsort(lat, done, sizeof(*lat), cmp_u64);
        size_t p99 = done ? (done * 99) / 100 : 0;
        printf("n=%zu failed=%zu median_us=%.1f p99_us=%.1f min_us=%.1f\n", done, failed,
               done ? lat[done / 2] / 1000.0 : 0.0,
               done ? lat[p99 < done ? p99 : done - 1] / 1000.0 : 0.0,
               done ? lat[0] / 1000.0 : 0.0);
    } else {
        printf("ok=%zu failed=%zu seconds=%.3f rate=%.0f", done - (failed > done ? done : failed),
               failed, secs, secs > 0 ? (double)done / secs : 0.0);
        for (size_t k = 0; k < ncodes; k++)
            printf(" %s=%zu", codes[k], code_n[k]);
        printf("\n");
    }
    if (first_err[0])
        fprintf(stderr, "first error: %s\n", first_err);
    return failed ? 1 : 0;
}

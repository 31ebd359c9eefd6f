/* SPDX-License-Identifier: Apache-2.0 */
/* ctrd-grpc-client: a C cross-check of bench/ctrd_images_client.js for
 * bench/bench_metadata.sh. The Node.js client (@grpc/grpc-js) spends more
 * CPU per call than containerd itself, so it understates containerd's rate;
 * this one speaks just enough gRPC to be about as cheap as bench-meta-client,
 * berth's C client: HTTP/2 with prior knowledge on one unix socket connection,
 * one stream at a time, request headers as HPACK literals, protobuf encoded
 * by hand, blocking I/O, no library. (libcurl 7.88 cannot reuse an HTTP/2
 * prior-knowledge connection: curl issue #10634.)
 *
 *   ctrd-grpc-client SOCK create|get|filter|list|version N [NAMESPACE] [BASE]
 *   env CTRD_TARGET="MEDIATYPE DIGEST SIZE": target of created images
 *   (default: a distinct synthetic digest per image, like bench-meta-client).
 *
 * Response headers are not decoded (HPACK Huffman): a call succeeds when the
 * response carries a gRPC message (every call here answers one on success;
 * an error is a trailers-only response with none).
 * Built by bench_metadata.sh: cc -O2 -o ctrd-grpc-client ctrd_grpc_client.c */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_byte(buf_t *b, unsigned c)
{
    unsigned char x = (unsigned char)c;
    put(b, &x, 1);
}

/* ---- protobuf ---- */
static void put_varint(buf_t *b, uint64_t v)
{
    do {
        put_byte(b, (v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void put_bytes(buf_t *b, unsigned field, const void *d, size_t n)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    put(b, d, n);
}

static void put_str(buf_t *b, unsigned field, const char *s)
{
    put_bytes(b, field, s, strlen(s));
}

static void put_msg(buf_t *b, unsigned field, buf_t *m)
{
    put_bytes(b, field, m->p, m->len);
    m->len = 0;
}

static uint64_t get_varint(const unsigned char **p, const unsigned char *end)
{
    uint64_t v = 0;
    for (int s = 0; *p < end && s < 64; s += 7) {
        unsigned char c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80))
            break;
    }
    return v;
}

/* Top-level field-1 entries of a message (images in a ListImagesResponse). */
static size_t count_field1(const unsigned char *p, const unsigned char *end)
{
    size_t n = 0;
    while (p < end) {
        uint64_t key = get_varint(&p, end), l;
        switch (key & 7) {
        case 0:
            get_varint(&p, end);
            break;
        case 1:
            p += 8;
            break;
        case 5:
            p += 4;
            break;
        case 2:
            l = get_varint(&p, end);
            if (l > (uint64_t)(end - p))
                return n;
            p += l;
            break;
        default:
            return n;
        }
        n += (key >> 3) == 1;
    }
    return n;
}

/* ---- HTTP/2 ---- */
enum {
    F_DATA = 0,
    F_HEADERS = 1,
    F_RST = 3,
    F_SETTINGS = 4,
    F_PING = 6,
    F_GOAWAY = 7,
    F_WINDOW = 8
};

static void frame_hdr(buf_t *b, size_t len, unsigned type, unsigned flags, uint32_t stream)
{
    unsigned char h[9] = {
        (unsigned char)(len >> 16),    (unsigned char)(len >> 8),    (unsigned char)len,
        (unsigned char)type,           (unsigned char)flags,         (unsigned char)(stream >> 24),
        (unsigned char)(stream >> 16), (unsigned char)(stream >> 8), (unsigned char)stream};
    put(b, h, 9);
}

static void window_update(buf_t *b, uint32_t stream, uint32_t inc)
{
    frame_hdr(b, 4, F_WINDOW, 0, stream);
    unsigned char v[4] = {(unsigned char)(inc >> 24), (unsigned char)(inc >> 16),
                          (unsigned char)(inc >> 8), (unsigned char)inc};
    put(b, v, 4);
}

/* HPACK integer with an N-bit prefix whose high bits are `first`. */
static void hpack_int(buf_t *b, unsigned first, unsigned bits, size_t v)
{
    size_t max = (1u << bits) - 1;
    if (v < max) {
        put_byte(b, first | v);
        return;
    }
    put_byte(b, first | max);
    for (v -= max; v >= 128; v >>= 7)
        put_byte(b, (v & 0x7f) | 0x80);
    put_byte(b, v);
}

/* Literal header field without indexing, new name, no Huffman. */
static void hpack_lit(buf_t *b, const char *name, const char *value)
{
    put_byte(b, 0);
    hpack_int(b, 0, 7, strlen(name));
    put(b, name, strlen(name));
    hpack_int(b, 0, 7, strlen(value));
    put(b, value, strlen(value));
}

static int sock_fd = -1;

__attribute__((noreturn)) static void die(const char *what)
{
    fprintf(stderr, "ctrd-grpc-client: %s%s%s\n", what, errno ? ": " : "",
            errno ? strerror(errno) : "");
    exit(1);
}

static void send_all(buf_t *b)
{
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(sock_fd, b->p + off, b->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        off += (size_t)w;
    }
    b->len = 0;
}

static unsigned char rbuf[1 << 16];
static size_t rpos, rlen;

static void recv_n(unsigned char *dst, size_t n)
{
    while (n) {
        if (rpos == rlen) {
            ssize_t r = read(sock_fd, rbuf, sizeof(rbuf));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                if (r == 0)
                    errno = 0;
                die("connection closed by containerd");
            }
            rpos = 0;
            rlen = (size_t)r;
        }
        size_t k = rlen - rpos < n ? rlen - rpos : n;
        if (dst) {
            memcpy(dst, rbuf + rpos, k);
            dst += k;
        }
        rpos += k;
        n -= k;
    }
}

/* Reads frames until stream `sid` ends; its DATA payload goes to `body`.
 * Returns 0 when the stream ended normally, -1 on RST_STREAM. */
static int read_response(uint32_t sid, buf_t *body, buf_t *out)
{
    static buf_t payload;
    for (;;) {
        unsigned char h[9];
        recv_n(h, 9);
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        unsigned type = h[3], flags = h[4];
        uint32_t stream =
            ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) & 0x7fffffff;
        payload.len = 0;
        if (len > payload.cap) {
            payload.cap = len;
            payload.p = realloc(payload.p, len);
        }
        recv_n(payload.p, len);
        payload.len = len;
        switch (type) {
        case F_SETTINGS:
            if (!(flags & 1)) {
                frame_hdr(out, 0, F_SETTINGS, 1, 0);
                send_all(out);
            }
            break;
        case F_PING:
            if (!(flags & 1)) {
                frame_hdr(out, 8, F_PING, 1, 0);
                put(out, payload.p, 8);
                send_all(out);
            }
            break;
        case F_GOAWAY:
            errno = 0;
            die("GOAWAY from containerd");
        case F_DATA:
            if (stream == sid) {
                size_t off = 0, pad = 0;
                if (flags & 8) { /* PADDED */
                    pad = payload.p[0];
                    off = 1;
                }
                put(body, payload.p + off, len - off - pad);
            }
            if (len) { /* give the connection window back */
                window_update(out, 0, (uint32_t)len);
                send_all(out);
            }
            if (stream == sid && (flags & 1))
                return 0;
            break;
        case F_HEADERS:
            if (stream == sid && (flags & 1))
                return 0;
            break;
        case F_RST:
            if (stream == sid)
                return -1;
            break;
        default:
            break; /* WINDOW_UPDATE, CONTINUATION, PRIORITY */
        }
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fputs("usage: ctrd-grpc-client SOCK create|get|filter|list|version N [NAMESPACE] [BASE]\n",
              stderr);
        return 2;
    }
    const char *sock = argv[1], *op = argv[2], *ns = argc > 4 ? argv[4] : "bench";
    size_t n = strtoull(argv[3], NULL, 10), base = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
    const char *path;
    if (strcmp(op, "create") == 0)
        path = "/containerd.services.images.v1.Images/Create";
    else if (strcmp(op, "get") == 0)
        path = "/containerd.services.images.v1.Images/Get";
    else if (strcmp(op, "filter") == 0 || strcmp(op, "list") == 0)
        path = "/containerd.services.images.v1.Images/List";
    else if (strcmp(op, "version") == 0)
        path = "/containerd.services.version.v1.Version/Version";
    else {
        fprintf(stderr, "ctrd-grpc-client: unknown op %s\n", op);
        return 2;
    }
    const char *vpath = "/containerd.services.version.v1.Version/Version";
    if (n == 0) {
        fputs("ctrd-grpc-client: N must be > 0\n", stderr);
        return 2;
    }
    char tmt[128] = "", tdg[128] = "";
    unsigned long long tsize = 0;
    const char *tenv = getenv("CTRD_TARGET");
    if (tenv && *tenv && (sscanf(tenv, "%127s %127s %llu", tmt, tdg, &tsize) != 3 || !tsize)) {
        fputs("ctrd-grpc-client: CTRD_TARGET must be \"MEDIATYPE DIGEST SIZE\"\n", stderr);
        return 2;
    }

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof(sa.sun_path)) {
        fputs("ctrd-grpc-client: socket path too long\n", stderr);
        return 2;
    }
    strcpy(sa.sun_path, sock);
    sock_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock_fd < 0 || connect(sock_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die(sock);

    buf_t out = {0}, req = {0}, msg = {0}, img = {0}, sub = {0}, body = {0};
    /* Preface; SETTINGS: no push, initial stream window 2^31-1; a large
     * connection window. */
    put(&out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    frame_hdr(&out, 12, F_SETTINGS, 0, 0);
    const unsigned char settings[12] = {0, 2, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff};
    put(&out, settings, 12);
    window_update(&out, 0, 0x7fffffff - 65535);
    send_all(&out);

    uint64_t *lat = calloc(n, sizeof(*lat));
    size_t items = 0;
    uint64_t t0 = 0;
    uint32_t sid = 1;
    /* i < 0: untimed warm-up Version calls (connection and SETTINGS). */
    for (long long i = -20; i < (long long)n; i++, sid += 2) {
        if (i == 0)
            t0 = now_ns();
        size_t k = base + (size_t)(i < 0 ? 0 : i);
        char name[96];
        snprintf(name, sizeof(name), "registry.bench.local/app/img-%zu:latest", k);
        msg.len = 0;
        if (i >= 0 && strcmp(op, "create") == 0) {
            put_str(&img, 1, name);
            put_str(&sub, 1, "bench");
            put_str(&sub, 2, "1");
            put_msg(&img, 2, &sub); /* labels map entry */
            char dg[80];
            snprintf(dg, sizeof(dg), "sha256:%064zx", k + 1);
            put_str(&sub, 1, *tmt ? tmt : "application/vnd.oci.image.manifest.v1+json");
            put_str(&sub, 2, *tdg ? tdg : dg);
            put_varint(&sub, 3 << 3 | 0);
            put_varint(&sub, tsize ? tsize : 1234);
            put_msg(&img, 3, &sub); /* target */
            put_msg(&msg, 1, &img);
        } else if (i >= 0 && strcmp(op, "get") == 0) {
            put_str(&msg, 1, name);
        } else if (i >= 0 && strcmp(op, "filter") == 0) {
            char f[128];
            snprintf(f, sizeof(f), "name==%s", name);
            put_str(&msg, 1, f);
        } /* list, version, warm-up: an empty message */

        uint64_t s = now_ns();
        req.len = 0;
        hpack_lit(&req, ":method", "POST");
        hpack_lit(&req, ":scheme", "http");
        hpack_lit(&req, ":path", i < 0 ? vpath : path);
        hpack_lit(&req, ":authority", "localhost");
        hpack_lit(&req, "content-type", "application/grpc");
        hpack_lit(&req, "te", "trailers");
        hpack_lit(&req, "containerd-namespace", ns);
        frame_hdr(&out, req.len, F_HEADERS, 4 /* END_HEADERS */, sid);
        put(&out, req.p, req.len);
        frame_hdr(&out, msg.len + 5, F_DATA, 1 /* END_STREAM */, sid);
        unsigned char pre[5] = {0, (unsigned char)(msg.len >> 24), (unsigned char)(msg.len >> 16),
                                (unsigned char)(msg.len >> 8), (unsigned char)msg.len};
        put(&out, pre, 5);
        put(&out, msg.p, msg.len);
        send_all(&out);
        body.len = 0;
        int rc = read_response(sid, &body, &out);
        if (rc < 0 || body.len < 5) {
            fprintf(stderr,
                    "ctrd-grpc-client: %s #%lld failed (%s; `ctr -a %s -n %s images ls` and "
                    "containerd's log tell why)\n",
                    i < 0 ? vpath : path, i, rc < 0 ? "stream reset" : "no message in the response",
                    sock, ns);
            return 1;
        }
        if (i < 0)
            continue;
        lat[i] = now_ns() - s;
        if (strcmp(op, "filter") == 0 || strcmp(op, "list") == 0)
            items += count_field1(body.p + 5, body.p + body.len);
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    qsort(lat, n, sizeof(*lat), cmp_u64);
    printf("%s n=%zu seconds=%.3f rate=%.0f/s median_us=%.1f p99_us=%.1f items=%zu\n", op, n, secs,
           n / secs, lat[n / 2] / 1e3, lat[(n * 99) / 100] / 1e3, items);
    close(sock_fd);
    free(lat);
    free(out.p);
    free(req.p);
    free(msg.p);
    free(img.p);
    free(sub.p);
    free(body.p);
    return 0;
}

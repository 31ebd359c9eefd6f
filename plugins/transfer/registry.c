/* SPDX-License-Identifier: Apache-2.0 */
/* Registry HTTP on libcurl's multi interface, driven by the plugin's libuv
 * loop: curl tells us which sockets to watch (uv_poll) and when to wake it
 * (uv_timer); no thread per download. On top: registry requests with host
 * fallback, Bearer/Basic auth, manual redirects, retries and Range resume. */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "berth/log.h"
#include "registry.h"

#define MAX_REDIRECTS 10
#define MAX_ERRBODY (64 * 1024)
#define UPLOAD_BUF (256 * 1024)

struct xfer_http_s {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    int running;
    xfer_settings_t s; /* scalar settings copy (no registries) */
};

typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    xfer_http_t *h;
} sock_ctx_t;

typedef struct {
    char *hostport;
    char *token;
    uint64_t expires_ms;
    bool basic;
} auth_entry_t;

struct xfer_reg_s {
    int refs;
    xfer_http_t *http;
    char *domain;
    char *repo;
    unsigned cap;
    xfer_host_t *hosts;
    size_t n_hosts;
    size_t preferred;
    char *user;
    char *password;
    char *extra_scope;
    auth_entry_t *auth;
    size_t n_auth;
};

struct xfer_rreq_s {
    xfer_reg_t *reg;
    xfer_rreq_cbs_t cbs;
    void *ud;
    /* request */
    char *method, *path, *abs_url, *accept, *content_type, *what;
    const void *body;
    size_t body_len;
    char *upload_path;
    uint64_t upload_size;
    bool no_fallback, no_retry_status;
    bool is_token; /* token request: no auth, link-local peers refused */
    char *basic;   /* token request: basic credentials (b64) to send */
    /* progress */
    size_t host_i;
    char *url;
    char *auth_hostport; /* credentials go only here */
    unsigned attempt, redirects;
    bool auth_retried;
    CURL *easy;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    /* response of the current attempt */
    long status;
    char *h_ctype, *h_digest, *h_location, *h_wwwauth, *h_crange, *h_retry_after, *h_clen;
    bool started;
    uint64_t range_from, skip;
    char *errbody;
    size_t errbody_len;
    berth_error_t *abort_err;
    berth_error_t *last_err; /* the error of the last host, reported if all fail */
    uv_timer_t timer;
    bool canceled, finished;
    /* file upload */
    int up_fd;
    uint64_t up_off;
    char *up_buf;
    size_t up_len, up_pos;
    bool up_reading, up_eof;
    uv_fs_t up_req;
    /* token sub-request */
    xfer_rreq_t *sub;
    char *tok_buf;
    size_t tok_len;
};

/* ---- curl multi on libuv ------------------------------------------------- */

static void check_done(xfer_http_t *h);

static void sock_closed(uv_handle_t *hd)
{
    free(hd->data);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    sock_ctx_t *c = p->data;
    xfer_http_t *h = c->h;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(h->multi, c->fd, flags, &h->running);
    check_done(h);
}

static int socket_fn(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    xfer_http_t *h = userp;
    sock_ctx_t *c = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (c) {
            uv_poll_stop(&c->poll);
            uv_close((uv_handle_t *)&c->poll, sock_closed);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (!c) {
        c = calloc(1, sizeof(*c));
        c->fd = s;
        c->h = h;
        if (uv_poll_init_socket(h->loop, &c->poll, s) < 0) {
            free(c);
            return -1;
        }
        c->poll.data = c;
        curl_multi_assign(h->multi, s, c);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&c->poll, ev, poll_cb);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    xfer_http_t *h = t->data;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &h->running);
    check_done(h);
}

static int timer_fn(CURLM *m, long timeout_ms, void *userp)
{
    xfer_http_t *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

xfer_http_t *xfer_http_new(uv_loop_t *loop, const xfer_settings_t *s, berth_error_t **err)
{
    static bool global_done;
    if (!global_done) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        global_done = true;
    }
    xfer_http_t *h = calloc(1, sizeof(*h));
    h->loop = loop;
    h->s = *s;
    h->s.regs = NULL;
    h->s.n_regs = 0;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        berth_error_set(err, BERTH_E_INTERNAL, "curl_multi_init failed");
        return NULL;
    }
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
    return h;
}

static void http_timer_closed(uv_handle_t *hd)
{
    free(hd->data);
}

void xfer_http_free(xfer_http_t *h)
{
    if (!h)
        return;
    curl_multi_cleanup(h->multi);
    uv_close((uv_handle_t *)&h->timer, http_timer_closed);
}

/* ---- sessions ------------------------------------------------------------ */

xfer_reg_t *xfer_reg_new(xfer_http_t *h, const xfer_settings_t *s, const char *domain,
                         const char *repo, unsigned cap, bool plain_http, bool skip_verify,
                         const char *user, const char *password, berth_error_t **err)
{
    xfer_reg_t *r = calloc(1, sizeof(*r));
    r->refs = 1;
    r->http = h;
    r->domain = strdup(domain);
    r->repo = strdup(repo);
    r->cap = cap;
    r->user = user ? strdup(user) : NULL;
    r->password = password ? strdup(password) : NULL;
    if (xfer_hosts_for(s, domain, cap, plain_http, skip_verify, &r->hosts, &r->n_hosts, err) < 0) {
        xfer_reg_unref(r);
        return NULL;
    }
    return r;
}

void xfer_reg_unref(xfer_reg_t *r)
{
    if (!r || --r->refs > 0)
        return;
    free(r->domain);
    free(r->repo);
    free(r->user);
    if (r->password) {
        explicit_bzero(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->extra_scope);
    xfer_hosts_free(r->hosts, r->n_hosts);
    for (size_t i = 0; i < r->n_auth; i++) {
        free(r->auth[i].hostport);
        free(r->auth[i].token);
    }
    free(r->auth);
    free(r);
}

const char *xfer_reg_repo(const xfer_reg_t *r)
{
    return r->repo;
}
const char *xfer_reg_domain(const xfer_reg_t *r)
{
    return r->domain;
}
void xfer_reg_prefer_host(xfer_reg_t *r, size_t i)
{
    if (i < r->n_hosts)
        r->preferred = i;
}
size_t xfer_reg_host_index(const xfer_reg_t *r)
{
    return r->preferred;
}

void xfer_reg_add_scope(xfer_reg_t *r, const char *scope)
{
    free(r->extra_scope);
    r->extra_scope = strdup(scope);
}

static auth_entry_t *auth_for(xfer_reg_t *r, const char *hostport, bool create)
{
    for (size_t i = 0; i < r->n_auth; i++)
        if (strcmp(r->auth[i].hostport, hostport) == 0)
            return &r->auth[i];
    if (!create)
        return NULL;
    r->auth = realloc(r->auth, (r->n_auth + 1) * sizeof(*r->auth));
    auth_entry_t *a = &r->auth[r->n_auth++];
    memset(a, 0, sizeof(*a));
    a->hostport = strdup(hostport);
    return a;
}

static char *basic_b64(const xfer_reg_t *r)
{
    if (!r->user)
        return NULL;
    char *up = NULL;
    if (asprintf(&up, "%s:%s", r->user, r->password ? r->password : "") < 0)
        return NULL;
    char *b = xfer_base64(up, strlen(up));
    explicit_bzero(up, strlen(up));
    free(up);
    return b;
}

/* ---- requests -------------------------------------------------------------- */

static void attempt(xfer_rreq_t *q);
static void finish(xfer_rreq_t *q, berth_error_t **err);

static void reset_response(xfer_rreq_t *q)
{
    free(q->h_ctype);
    free(q->h_digest);
    free(q->h_location);
    free(q->h_wwwauth);
    free(q->h_crange);
    free(q->h_retry_after);
    free(q->h_clen);
    q->h_ctype = q->h_digest = q->h_location = q->h_wwwauth = q->h_crange = q->h_retry_after =
        q->h_clen = NULL;
    free(q->errbody);
    q->errbody = NULL;
    q->errbody_len = 0;
    q->status = 0;
    q->started = false;
    q->skip = 0;
}

static void rreq_closed(uv_handle_t *hd)
{
    xfer_rreq_t *q = hd->data;
    free(q);
}

static void rreq_free(xfer_rreq_t *q)
{
    reset_response(q);
    if (q->hdrs)
        curl_slist_free_all(q->hdrs);
    free(q->method);
    free(q->path);
    free(q->abs_url);
    free(q->accept);
    free(q->content_type);
    free(q->what);
    free(q->upload_path);
    free(q->url);
    free(q->auth_hostport);
    free(q->up_buf);
    free(q->tok_buf);
    if (q->basic) {
        explicit_bzero(q->basic, strlen(q->basic));
        free(q->basic);
    }
    if (q->up_fd >= 0)
        close(q->up_fd);
    berth_error_free(&q->abort_err);
    berth_error_free(&q->last_err);
    xfer_reg_unref(q->reg);
    uv_close((uv_handle_t *)&q->timer, rreq_closed);
}

static char **header_slot(xfer_rreq_t *q, const char *name, size_t n)
{
#define H(str, field)                                                                              \
    if (n == sizeof(str) - 1 && strncasecmp(name, str, n) == 0)                                    \
        return &q->field;
    H("content-type", h_ctype)
    H("docker-content-digest", h_digest)
    H("location", h_location)
    H("www-authenticate", h_wwwauth)
    H("content-range", h_crange)
    H("retry-after", h_retry_after)
    H("content-length", h_clen)
#undef H
    return NULL;
}

const char *xfer_rreq_header(const xfer_rreq_t *q, const char *name)
{
    char **s = header_slot((xfer_rreq_t *)q, name, strlen(name));
    return s ? *s : NULL;
}

long xfer_rreq_status(const xfer_rreq_t *q)
{
    return q->status;
}
const char *xfer_rreq_url(const xfer_rreq_t *q)
{
    return q->url;
}

static bool status_ok(long st)
{
    return st >= 200 && st < 300;
}

/* Headers arrive line by line; the empty line ends a response's headers. */
static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    xfer_rreq_t *q = ud;
    size_t n = size * nitems;
    if (q->canceled)
        return 0;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        /* A new response (e.g. after 100 Continue): forget earlier headers. */
        reset_response(q);
        return n;
    }
    if (n <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
        if (status_ok(q->status) && !q->started && !q->is_token) {
            q->started = true;
            if (q->range_from > 0) {
                if (q->status == 200) {
                    q->skip = q->range_from; /* server ignored Range */
                } else if (q->status == 206) {
                    uint64_t start = 0;
                    if (!q->h_crange || sscanf(q->h_crange, "bytes %" SCNu64, &start) != 1 ||
                        start != q->range_from) {
                        berth_error_set(&q->abort_err, BERTH_E_UNAVAILABLE,
                                        "%s: registry answered a range request with "
                                        "Content-Range \"%s\"",
                                        q->what, q->h_crange ? q->h_crange : "");
                        return 0;
                    }
                }
            }
            if (q->cbs.on_start && q->cbs.on_start(q, q->status, q->ud, &q->abort_err) < 0)
                return 0;
        }
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon)
        return n;
    char **slot = header_slot(q, buf, (size_t)(colon - buf));
    if (!slot)
        return n;
    const char *v = colon + 1;
    const char *end = buf + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    if (end - v > 16384)
        return n;
    if (*slot && slot == &q->h_wwwauth) {
        /* Several challenges may come in separate headers: join them. */
        char *j = NULL;
        if (asprintf(&j, "%s, %.*s", *slot, (int)(end - v), v) >= 0) {
            free(*slot);
            *slot = j;
        }
        return n;
    }
    free(*slot);
    *slot = strndup(v, (size_t)(end - v));
    return n;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    xfer_rreq_t *q = ud;
    size_t n = size * nmemb;
    if (q->canceled || q->abort_err)
        return 0;
    if (!status_ok(q->status) || q->is_token) {
        if (q->is_token && status_ok(q->status)) {
            if (q->tok_len + n > XFER_MAX_SMALL_JSON) {
                berth_error_set(&q->abort_err, BERTH_E_PERMISSION_DENIED,
                                "registry token response too large");
                return 0;
            }
            q->tok_buf = realloc(q->tok_buf, q->tok_len + n + 1);
            memcpy(q->tok_buf + q->tok_len, p, n);
            q->tok_len += n;
            return n;
        }
        size_t room = MAX_ERRBODY - q->errbody_len;
        size_t take = n < room ? n : room;
        if (take) {
            q->errbody = realloc(q->errbody, q->errbody_len + take + 1);
            memcpy(q->errbody + q->errbody_len, p, take);
            q->errbody_len += take;
            q->errbody[q->errbody_len] = 0;
        }
        return n;
    }
    size_t off = 0;
    if (q->skip) {
        size_t s = q->skip < n ? (size_t)q->skip : n;
        q->skip -= s;
        off = s;
        if (off == n)
            return n;
    }
    if (!q->cbs.on_data)
        return n;
    size_t r = q->cbs.on_data(q, p + off, n - off, q->ud);
    if (r == CURL_WRITEFUNC_PAUSE) {
        if (off) {
            /* We consumed the skipped prefix already; curl will deliver the
             * whole buffer again, so skip it again then. */
            q->skip += off;
        }
        return CURL_WRITEFUNC_PAUSE;
    }
    if (r != n - off)
        return 0;
    return n;
}

/* File uploads read the blob asynchronously on the libuv threadpool: the read
 * callback pauses curl until the next buffer is there. */
static void up_read_done(uv_fs_t *r)
{
    xfer_rreq_t *q = r->data;
    ssize_t res = r->result;
    uv_fs_req_cleanup(r);
    q->up_reading = false;
    if (q->finished) {
        rreq_free(q); /* finish() left the request to us */
        return;
    }
    if (res < 0) {
        berth_error_set(&q->abort_err, BERTH_E_INTERNAL, "%s: read %s: %s", q->what, q->upload_path,
                        uv_strerror((int)res));
    } else {
        q->up_len = (size_t)res;
        q->up_pos = 0;
        q->up_off += (uint64_t)res;
        if (res == 0)
            q->up_eof = true;
    }
    if (q->easy)
        curl_easy_pause(q->easy, CURLPAUSE_CONT);
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    xfer_rreq_t *q = ud;
    size_t n = size * nitems;
    if (q->abort_err || q->canceled)
        return CURL_READFUNC_ABORT;
    if (q->upload_path) {
        if (q->up_pos < q->up_len) {
            size_t t = q->up_len - q->up_pos < n ? q->up_len - q->up_pos : n;
            memcpy(buf, q->up_buf + q->up_pos, t);
            q->up_pos += t;
            return t;
        }
        if (q->up_eof || q->up_off >= q->upload_size)
            return 0;
        if (!q->up_reading) {
            q->up_reading = true;
            uv_buf_t b = uv_buf_init(q->up_buf, UPLOAD_BUF);
            q->up_req.data = q;
            if (uv_fs_read(q->reg->http->loop, &q->up_req, q->up_fd, &b, 1, (int64_t)q->up_off,
                           up_read_done) < 0) {
                q->up_reading = false;
                return CURL_READFUNC_ABORT;
            }
        }
        return CURL_READFUNC_PAUSE;
    }
    size_t left = q->body_len - q->up_pos;
    size_t t = left < n ? left : n;
    memcpy(buf, (const char *)q->body + q->up_pos, t);
    q->up_pos += t;
    return t;
}

static int prereq_cb(void *ud, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port)
{
    xfer_rreq_t *q = ud;
    if (q->is_token && xfer_ip_link_local(conn_primary_ip)) {
        berth_error_set(&q->abort_err, BERTH_E_PERMISSION_DENIED,
                        "registry token realm resolves to link-local address %s", conn_primary_ip);
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

static bool same_host(const char *url, const char *hostport)
{
    char *hp = xfer_url_hostport(url);
    bool same = hp && hostport && strcmp(hp, hostport) == 0;
    free(hp);
    return same;
}

static void add_header(xfer_rreq_t *q, const char *fmt, ...) BERTH_PRINTF(2, 3);
static void add_header(xfer_rreq_t *q, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) >= 0) {
        q->hdrs = curl_slist_append(q->hdrs, s);
        free(s);
    }
    va_end(ap);
}

static bool host_skip_verify(const xfer_rreq_t *q)
{
    if (q->host_i < q->reg->n_hosts)
        return q->reg->hosts[q->host_i].skip_verify;
    return false;
}

static void attempt(xfer_rreq_t *q)
{
    xfer_reg_t *r = q->reg;
    xfer_http_t *h = r->http;
    reset_response(q);
    if (q->hdrs) {
        curl_slist_free_all(q->hdrs);
        q->hdrs = NULL;
    }
    if (!q->url) {
        if (q->abs_url) {
            q->url = strdup(q->abs_url);
        } else if (asprintf(&q->url, "%s%s", r->hosts[q->host_i].url, q->path) < 0) {
            q->url = NULL;
        }
        free(q->auth_hostport);
        q->auth_hostport =
            q->is_token ? NULL
                        : xfer_url_hostport(q->abs_url ? q->abs_url : r->hosts[q->host_i].url);
    }
    q->range_from = q->cbs.resume_offset ? q->cbs.resume_offset(q, q->ud) : 0;
    q->up_pos = q->up_len = 0;
    q->up_off = 0;
    q->up_eof = false;

    CURL *e = curl_easy_init();
    q->easy = e;
    q->errbuf[0] = 0;
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "berth/0.1");
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)h->s.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    long idle = (long)(h->s.idle_timeout_ms / 1000);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, idle > 0 ? idle : 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    bool insecure = !q->is_token && host_skip_verify(q);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, insecure ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, insecure ? 0L : 2L);
    if (q->is_token) {
        curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
        curl_easy_setopt(e, CURLOPT_PREREQDATA, q);
    }
    add_header(q, "Expect:");
    if (q->accept)
        add_header(q, "Accept: %s", q->accept);
    if (q->content_type)
        add_header(q, "Content-Type: %s", q->content_type);
    if (q->range_from > 0)
        add_header(q, "Range: bytes=%" PRIu64 "-", q->range_from);
    if (q->is_token) {
        if (q->basic)
            add_header(q, "Authorization: Basic %s", q->basic);
    } else if (q->auth_hostport && same_host(q->url, q->auth_hostport)) {
        /* Credentials go only to the registry host, never to a redirect target. */
        auth_entry_t *a = auth_for(r, q->auth_hostport, false);
        if (a && a->token && a->expires_ms > berth_mono_ms()) {
            add_header(q, "Authorization: Bearer %s", a->token);
        } else if (a && a->basic) {
            char *b = basic_b64(r);
            if (b) {
                add_header(q, "Authorization: Basic %s", b);
                explicit_bzero(b, strlen(b));
                free(b);
            }
        }
    }
    const char *m = q->method;
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") != 0) {
        bool has_body = q->upload_path || q->body;
        if (has_body) {
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
            curl_easy_setopt(e, CURLOPT_READDATA, q);
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                             (curl_off_t)(q->upload_path ? q->upload_size : q->body_len));
        } else {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        }
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->hdrs);
    berth_log(BERTH_LOG_DEBUG, "msg=\"http request\" method=%s url=\"%s\" range=%" PRIu64, m,
              q->url, q->range_from);
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK) {
        curl_easy_cleanup(e);
        q->easy = NULL;
        berth_error_t *err = NULL;
        berth_error_set(&err, BERTH_E_INTERNAL, "curl_multi_add_handle: %s",
                        curl_multi_strerror(mc));
        finish(q, &err);
    }
}

static void finish(xfer_rreq_t *q, berth_error_t **err)
{
    if (q->finished)
        return;
    q->finished = true;
    uv_timer_stop(&q->timer);
    if (q->sub) {
        xfer_rreq_cancel(q->sub);
        q->sub = NULL;
    }
    if (q->easy) {
        curl_multi_remove_handle(q->reg->http->multi, q->easy);
        curl_easy_cleanup(q->easy);
        q->easy = NULL;
    }
    if (q->cbs.on_done)
        q->cbs.on_done(q, err ? *err : NULL, q->ud);
    if (err)
        berth_error_free(err);
    if (!q->up_reading)
        rreq_free(q);
    /* else: up_read_done runs later; it sees finished and frees below */
}

static void retry_fire(uv_timer_t *t)
{
    xfer_rreq_t *q = t->data;
    if (q->finished)
        return;
    if (q->canceled) {
        if (q->easy) {
            curl_multi_remove_handle(q->reg->http->multi, q->easy);
            curl_easy_cleanup(q->easy);
            q->easy = NULL;
        }
        berth_error_t *e = NULL;
        berth_error_set(&e, BERTH_E_CANCELED, "%s: canceled", q->what);
        finish(q, &e);
        return;
    }
    attempt(q);
}

static void schedule(xfer_rreq_t *q, uint64_t delay_ms)
{
    uv_timer_start(&q->timer, retry_fire, delay_ms, 0);
}

/* The registry's JSON error body, if any: "MANIFEST_UNKNOWN: manifest unknown". */
static char *registry_message(const xfer_rreq_t *q)
{
    if (!q->errbody || !q->errbody_len)
        return NULL;
    json_t *root = json_loadb(q->errbody, q->errbody_len, 0, NULL);
    const json_t *errs = json_object_get(root, "errors");
    const json_t *e0 = json_array_get(errs, 0);
    const char *code = json_string_value(json_object_get(e0, "code"));
    const char *msg = json_string_value(json_object_get(e0, "message"));
    char *r = NULL;
    if (code || msg) {
        if (asprintf(&r, "%.60s%s%.200s", code ? code : "", code && msg ? ": " : "",
                     msg ? msg : "") < 0)
            r = NULL;
    }
    json_decref(root);
    return r;
}

static bool retryable_curl(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static uint64_t backoff_ms(const xfer_rreq_t *q)
{
    uint64_t d = 100ULL << (q->attempt < 8 ? q->attempt : 8);
    return xfer_retry_after_ms(q->h_retry_after, d, q->reg->http->s.max_retry_after_ms);
}

/* Moves to the next host (resolve/pull fallback); false when none is left. */
static bool next_host(xfer_rreq_t *q, berth_error_t **err)
{
    if (q->no_fallback || q->abs_url || q->host_i + 1 >= q->reg->n_hosts)
        return false;
    berth_log(BERTH_LOG_INFO, "msg=\"trying next registry host\" what=\"%s\" error=\"%s\"", q->what,
              (*err)->message);
    berth_error_free(&q->last_err);
    q->last_err = *err;
    *err = NULL;
    q->host_i++;
    q->attempt = 0;
    q->redirects = 0;
    q->auth_retried = false;
    free(q->url);
    q->url = NULL;
    attempt(q);
    return true;
}

static void token_done(const berth_error_t *err, const char *data, size_t len, xfer_rreq_t *q);

static void token_req_done(xfer_rreq_t *t, const berth_error_t *err, void *ud)
{
    xfer_rreq_t *q = ud;
    q->sub = NULL;
    if (q->finished)
        return;
    token_done(err, t->tok_buf, t->tok_len, q);
}

static void token_done(const berth_error_t *err, const char *data, size_t len, xfer_rreq_t *q)
{
    berth_error_t *e = NULL;
    if (err) {
        berth_error_set(
            &e, err->code == BERTH_E_CANCELED ? BERTH_E_CANCELED : BERTH_E_PERMISSION_DENIED,
            "%s: fetching a registry token: %s", q->what, err->message);
        finish(q, &e);
        return;
    }
    char *tok = NULL;
    uint64_t exp = 0;
    if (xfer_token_parse(data ? data : "", len, &tok, &exp, &e) < 0) {
        berth_error_wrap(&e, "%s", q->what);
        finish(q, &e);
        return;
    }
    auth_entry_t *a = auth_for(q->reg, q->auth_hostport, true);
    free(a->token);
    a->token = tok;
    /* Renew a bit before the registry's expiry. */
    a->expires_ms = berth_mono_ms() + (exp > 10 ? exp - 5 : exp) * 1000;
    attempt(q);
}

/* 401: get credentials for the challenge and try again once. */
static void handle_401(xfer_rreq_t *q)
{
    berth_error_t *e = NULL;
    char *msg = registry_message(q);
    if (q->auth_retried || !q->h_wwwauth || !q->auth_hostport) {
        berth_error_set(&e, BERTH_E_PERMISSION_DENIED,
                        "%s: the registry %s refused our credentials (401%s%s)%s", q->what,
                        q->reg->domain, msg ? ": " : "", msg ? msg : "",
                        q->reg->user ? "" : "; pass --user to authenticate");
        free(msg);
        if (!next_host(q, &e))
            finish(q, &e);
        return;
    }
    free(msg);
    q->auth_retried = true;
    xfer_challenge_t ch[4];
    int n = xfer_auth_parse(q->h_wwwauth, ch, 4, &e);
    if (n < 0) {
        berth_error_wrap(&e, "%s", q->what);
        finish(q, &e);
        return;
    }
    xfer_challenge_t *bearer = NULL, *basic = NULL;
    for (int i = 0; i < n; i++) {
        if (strcmp(ch[i].scheme, "bearer") == 0 && !bearer)
            bearer = &ch[i];
        else if (strcmp(ch[i].scheme, "basic") == 0 && !basic)
            basic = &ch[i];
    }
    free(q->url);
    q->url = NULL; /* restart from the registry host */
    if (bearer && bearer->realm) {
        if (xfer_realm_check(bearer->realm, &e) < 0) {
            for (int i = 0; i < n; i++)
                xfer_challenge_clear(&ch[i]);
            berth_error_wrap(&e, "%s", q->what);
            finish(q, &e);
            return;
        }
        char *scope = NULL;
        if (bearer->scope) {
            scope = strdup(bearer->scope);
        } else if (asprintf(&scope, "repository:%s:%s", q->reg->repo,
                            (q->reg->cap & XFER_CAP_PUSH) ? "pull,push" : "pull") < 0) {
            scope = NULL;
        }
        char *es = xfer_url_escape(scope ? scope : "");
        char *ess = q->reg->extra_scope ? xfer_url_escape(q->reg->extra_scope) : NULL;
        char *svc = bearer->service ? xfer_url_escape(bearer->service) : NULL;
        char *url = NULL;
        if (asprintf(&url, "%s%sscope=%s%s%s%s%s", bearer->realm,
                     strchr(bearer->realm, '?') ? "&" : "?", es, ess ? "&scope=" : "",
                     ess ? ess : "", svc ? "&service=" : "", svc ? svc : "") < 0)
            url = NULL;
        free(scope);
        free(es);
        free(ess);
        free(svc);
        for (int i = 0; i < n; i++)
            xfer_challenge_clear(&ch[i]);
        xfer_rreq_t *t = calloc(1, sizeof(*t));
        t->reg = q->reg;
        q->reg->refs++;
        t->is_token = true;
        t->method = strdup("GET");
        t->abs_url = url;
        t->what = strdup("token");
        t->up_fd = -1;
        t->no_fallback = true;
        t->basic = basic_b64(q->reg);
        t->cbs.on_done = token_req_done;
        t->ud = q;
        uv_timer_init(q->reg->http->loop, &t->timer);
        t->timer.data = t;
        q->sub = t;
        attempt(t);
        return;
    }
    for (int i = 0; i < n; i++)
        xfer_challenge_clear(&ch[i]);
    if (basic && q->reg->user) {
        auth_entry_t *a = auth_for(q->reg, q->auth_hostport, true);
        a->basic = true;
        attempt(q);
        return;
    }
    berth_error_set(&e, BERTH_E_PERMISSION_DENIED,
                    "%s: the registry %s requires authentication; pass --user", q->what,
                    q->reg->domain);
    finish(q, &e);
}

static void on_easy_done(xfer_rreq_t *q, CURLcode rc)
{
    berth_error_t *e = NULL;
    if (q->easy) {
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
        curl_multi_remove_handle(q->reg->http->multi, q->easy);
        curl_easy_cleanup(q->easy);
        q->easy = NULL;
    }
    if (q->canceled) {
        berth_error_set(&e, BERTH_E_CANCELED, "%s: canceled", q->what);
        finish(q, &e);
        return;
    }
    if (q->abort_err) {
        e = q->abort_err;
        q->abort_err = NULL;
        finish(q, &e);
        return;
    }
    q->attempt++;
    unsigned max = q->reg->http->s.max_attempts;
    if (rc != CURLE_OK) {
        berth_error_set(&e, BERTH_E_UNAVAILABLE, "%s: %s: %s", q->what, q->url,
                        q->errbuf[0] ? q->errbuf : curl_easy_strerror(rc));
        if (retryable_curl(rc) && q->attempt < max) {
            berth_log(BERTH_LOG_INFO, "msg=\"retrying\" what=\"%s\" attempt=%u error=\"%s\"",
                      q->what, q->attempt, e->message);
            berth_error_free(&e);
            free(q->url);
            q->url = NULL;
            schedule(q, backoff_ms(q));
            return;
        }
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR)
            berth_error_wrap(&e, "TLS verification failed (use --skip-verify or --plain-http for "
                                 "a registry without a valid certificate)");
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
            rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_OPERATION_TIMEDOUT) {
            /* The registry, not berth, is out of reach: say so (the CLI's
             * generic advice for `unavailable` points at berth's plugins). */
            berth_error_t *h = NULL;
            berth_error_set(&h, e->code,
                            "%s \xe2\x80\x94 check the registry's host name and port, that it is "
                            "up and that berthd's host reaches it (proxy variables in berthd's "
                            "environment)",
                            e->message);
            berth_error_free(&e);
            e = h;
        }
        if (!next_host(q, &e))
            finish(q, &e);
        return;
    }
    long st = q->status;
    if (status_ok(st)) {
        if (!q->is_token)
            xfer_reg_prefer_host(q->reg, q->host_i);
        finish(q, NULL);
        return;
    }
    if (st == 401 && !q->is_token) {
        handle_401(q);
        return;
    }
    if ((st == 301 || st == 302 || st == 303 || st == 307 || st == 308) && q->h_location) {
        if (++q->redirects > MAX_REDIRECTS) {
            berth_error_set(&e, BERTH_E_UNAVAILABLE, "%s: more than %d redirects", q->what,
                            MAX_REDIRECTS);
            finish(q, &e);
            return;
        }
        char *nu = xfer_url_resolve(q->url, q->h_location);
        if (!nu || (strncasecmp(nu, "http://", 7) != 0 && strncasecmp(nu, "https://", 8) != 0)) {
            berth_error_set(&e, BERTH_E_UNAVAILABLE, "%s: redirect to a non-http(s) URL", q->what);
            free(nu);
            finish(q, &e);
            return;
        }
        free(q->url);
        q->url = nu;
        if (st == 303 && strcmp(q->method, "HEAD") != 0) {
            free(q->method);
            q->method = strdup("GET");
        }
        q->attempt--; /* a redirect is not a failed attempt */
        attempt(q);
        return;
    }
    char *msg = registry_message(q);
    if ((st >= 500 || st == 429 || st == 408) && !q->no_retry_status && q->attempt < max) {
        berth_log(BERTH_LOG_INFO, "msg=\"retrying\" what=\"%s\" status=%ld attempt=%u", q->what, st,
                  q->attempt);
        free(msg);
        free(q->url);
        q->url = NULL;
        schedule(q, backoff_ms(q));
        return;
    }
    berth_code_t code = st == 404                ? BERTH_E_NOT_FOUND
                        : st == 403              ? BERTH_E_PERMISSION_DENIED
                        : st == 416              ? BERTH_E_FAILED_PRECONDITION
                        : st >= 500 || st == 429 ? BERTH_E_UNAVAILABLE
                                                 : BERTH_E_INVALID_ARGUMENT;
    if (st == 404)
        berth_error_set(&e, code, "%s not found in %s/%s%s%s%s", q->what, q->reg->domain,
                        q->reg->repo, msg ? " (" : "", msg ? msg : "", msg ? ")" : "");
    else
        berth_error_set(&e, code, "%s: registry %s answered HTTP %ld%s%s", q->what, q->reg->domain,
                        st, msg ? ": " : "", msg ? msg : "");
    free(msg);
    if (q->is_token || !next_host(q, &e))
        finish(q, &e);
}

static void check_done(xfer_http_t *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        xfer_rreq_t *q = NULL;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        if (q)
            on_easy_done(q, rc);
    }
}

xfer_rreq_t *xfer_rreq_start(xfer_reg_t *r, const xfer_rreq_opts_t *o, const xfer_rreq_cbs_t *cbs,
                             void *ud, berth_error_t **err)
{
    xfer_rreq_t *q = calloc(1, sizeof(*q));
    q->reg = r;
    r->refs++;
    q->cbs = *cbs;
    q->ud = ud;
    q->up_fd = -1;
    q->method = strdup(o->method ? o->method : "GET");
    q->path = o->path ? strdup(o->path) : NULL;
    q->abs_url = o->url ? strdup(o->url) : NULL;
    q->accept = o->accept ? strdup(o->accept) : NULL;
    q->content_type = o->content_type ? strdup(o->content_type) : NULL;
    q->what = strdup(o->what ? o->what : "request");
    q->body = o->body;
    q->body_len = o->body_len;
    q->no_fallback = o->no_fallback;
    q->no_retry_status = o->no_retry_status;
    q->host_i = r->preferred;
    uv_timer_init(r->http->loop, &q->timer);
    q->timer.data = q;
    if (o->upload_path) {
        q->upload_path = strdup(o->upload_path);
        q->upload_size = o->upload_size;
        q->up_fd = open(o->upload_path, O_RDONLY | O_CLOEXEC);
        q->up_buf = malloc(UPLOAD_BUF);
        if (q->up_fd < 0) {
            berth_error_errno(err, errno, "%s: open %s", q->what, o->upload_path);
            q->cbs.on_done = NULL;
            rreq_free(q);
            return NULL;
        }
    }
    if (!q->path && !q->abs_url) {
        berth_error_set(err, BERTH_E_INTERNAL, "request without a path");
        q->cbs.on_done = NULL;
        rreq_free(q);
        return NULL;
    }
    attempt(q);
    return q;
}

void xfer_rreq_cancel(xfer_rreq_t *q)
{
    if (!q || q->finished || q->canceled)
        return;
    q->canceled = true;
    /* Complete from the loop, never from inside the caller's stack (which
     * may be a curl callback): retry_fire sees `canceled` and finishes. */
    if (q->sub)
        xfer_rreq_cancel(q->sub);
    schedule(q, 0);
}

void xfer_rreq_abort(xfer_rreq_t *q, berth_error_t **err)
{
    berth_error_free(&q->abort_err);
    q->abort_err = *err;
    *err = NULL;
}

void xfer_rreq_unpause(xfer_rreq_t *q)
{
    if (q && q->easy && !q->finished)
        curl_easy_pause(q->easy, CURLPAUSE_CONT);
}

/* ---- GET into memory --------------------------------------------------------- */

typedef struct {
    xfer_mem_cb cb;
    void *ud;
    size_t max;
    char *buf;
    size_t len;
} mem_sink_t;

static int mem_start(xfer_rreq_t *q, long status, void *ud, berth_error_t **err)
{
    mem_sink_t *m = ud;
    const char *cl = xfer_rreq_header(q, "content-length");
    if (cl && strtoull(cl, NULL, 10) > m->max)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                               "%s is %s bytes, over the limit of %zu", q->what, cl, m->max);
    return 0;
}

static size_t mem_data(xfer_rreq_t *q, const char *p, size_t n, void *ud)
{
    mem_sink_t *m = ud;
    if (m->len + n > m->max) {
        berth_error_t *e = NULL;
        berth_error_set(&e, BERTH_E_RESOURCE_EXHAUSTED, "%s is larger than the limit of %zu bytes",
                        q->what, m->max);
        xfer_rreq_abort(q, &e);
        return 0;
    }
    m->buf = realloc(m->buf, m->len + n + 1);
    memcpy(m->buf + m->len, p, n);
    m->len += n;
    return n;
}

static uint64_t mem_resume(xfer_rreq_t *q, void *ud)
{
    mem_sink_t *m = ud;
    m->len = 0; /* small documents are fetched again from the start */
    return 0;
}

static void mem_done(xfer_rreq_t *q, const berth_error_t *err, void *ud)
{
    mem_sink_t *m = ud;
    if (m->buf)
        m->buf[m->len] = 0;
    m->cb(err, m->buf ? m->buf : "", m->len, xfer_rreq_header(q, "content-type"),
          xfer_rreq_header(q, "docker-content-digest"), m->ud);
    free(m->buf);
    free(m);
}

xfer_rreq_t *xfer_reg_get_mem(xfer_reg_t *r, const char *path, const char *accept, size_t max,
                              const char *what, bool no_fallback, xfer_mem_cb cb, void *ud,
                              berth_error_t **err)
{
    mem_sink_t *m = calloc(1, sizeof(*m));
    m->cb = cb;
    m->ud = ud;
    m->max = max;
    xfer_rreq_opts_t o = {
        .method = "GET", .path = path, .accept = accept, .what = what, .no_fallback = no_fallback};
    xfer_rreq_cbs_t cbs = {.on_start = mem_start,
                           .on_data = mem_data,
                           .resume_offset = mem_resume,
                           .on_done = mem_done};
    xfer_rreq_t *q = xfer_rreq_start(r, &o, &cbs, m, err);
    if (!q)
        free(m);
    return q;
}

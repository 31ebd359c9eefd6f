/* SPDX-License-Identifier: Apache-2.0 */
/* Image archives. Export writes an OCI image layout tar (oci-layout,
 * index.json, blobs/sha256/...) that also carries a Docker manifest.json, so
 * `ctr import` and `docker load` read it; the tar is produced by libarchive
 * into a buffer that is streamed out under flow control, blob files being
 * read with uv_fs_read. Import spools the caller's tar to a temp file, a
 * worker thread unpacks and hashes its entries (gzip or not, OCI layout or
 * `docker save`), then the loop writes the needed blobs into content, unpacks
 * and records the images. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth/log.h"
#include "impl.h"
#include "local.h"

#define OUT_CHUNK (512 * 1024)
#define READ_BUF (512 * 1024)
#define MAX_ENTRIES 100000
#define MAX_SLURP_TOTAL (256u << 20)

static char *hex_of(const char *digest)
{
    return (char *)digest + 7;
}

/* ======================================================================== */
/* export                                                                   */
/* ======================================================================== */

typedef struct {
    char *name;
    char *digest; /* blobs: to ask content.path */
    char *path;   /* file to copy, or NULL */
    char *mem;    /* in-memory bytes (owned) */
    uint64_t size;
} xentry_t;

typedef struct {
    berth_req_t *req;
    char *ns;
    char **refs;
    size_t n_refs, ri;
    bool has_want;
    xfer_platform_t want;
    xfer_limage_t **imgs;
    size_t n_imgs;
    xentry_t *ents;
    size_t n_ents, ei;
    struct archive *a;
    char *out;
    size_t out_len, out_cap;
    int fd;
    uint64_t foff;
    bool reading, in_entry, closed, finished, started;
    char *rbuf;
    uv_fs_t fsreq;
    int pending;
    char *lease; /* holds the blobs read by path; deleted before the reply */
    berth_error_t *err;
} exp_t;

static void exp_pump(exp_t *x);

static void exp_free(exp_t *x)
{
    free(x->ns);
    xfer_strv_free(x->refs, x->n_refs);
    for (size_t i = 0; i < x->n_imgs; i++)
        xfer_limage_free(x->imgs[i]);
    free(x->imgs);
    for (size_t i = 0; i < x->n_ents; i++) {
        free(x->ents[i].name);
        free(x->ents[i].digest);
        free(x->ents[i].path);
        free(x->ents[i].mem);
    }
    free(x->ents);
    if (x->a)
        archive_write_free(x->a);
    free(x->out);
    if (x->fd >= 0)
        close(x->fd);
    free(x->rbuf);
    free(x->lease);
    berth_error_free(&x->err);
    free(x);
    xfer_release_memory();
}

static void exp_reply(void *ud)
{
    exp_t *x = ud;
    if (x->err) {
        berth_req_fail(x->req, &x->err);
    } else {
        berth_req_stream_close(x->req);
        berth_req_reply_empty(x->req);
    }
    exp_free(x);
}

static void exp_finish(exp_t *x)
{
    if (x->finished)
        return;
    x->finished = true;
    if (x->reading)
        return; /* the read callback finishes */
    if (x->lease) {
        /* Every blob file is read (or never will be): release them to the
         * gc before answering, so a collection after the export frees them. */
        char *lease = x->lease;
        x->lease = NULL;
        xfer_lease_delete(x->ns, lease, exp_reply, x);
        free(lease);
        return;
    }
    exp_reply(x);
}

static void exp_fail(exp_t *x, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void exp_fail(exp_t *x, berth_code_t code, const char *fmt, ...)
{
    if (!x->err) {
        x->err = calloc(1, sizeof(*x->err));
        x->err->code = code;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&x->err->message, fmt, ap) < 0)
            x->err->message = NULL;
        va_end(ap);
    }
}

static la_ssize_t exp_write_cb(struct archive *a, void *ud, const void *buf, size_t n)
{
    exp_t *x = ud;
    if (x->out_len + n > x->out_cap) {
        x->out_cap = (x->out_len + n) * 2;
        x->out = realloc(x->out, x->out_cap);
    }
    memcpy(x->out + x->out_len, buf, n);
    x->out_len += n;
    return (la_ssize_t)n;
}

static void exp_read_done(uv_fs_t *r)
{
    exp_t *x = r->data;
    ssize_t n = r->result;
    uv_fs_req_cleanup(r);
    x->reading = false;
    if (x->finished) {
        x->finished = false;
        exp_finish(x);
        return;
    }
    xentry_t *e = &x->ents[x->ei];
    if (n <= 0) {
        exp_fail(x, BERTH_E_INTERNAL, "export: read %s: %s", e->path,
                 n < 0 ? uv_strerror((int)n) : "file shorter than its descriptor");
        exp_finish(x);
        return;
    }
    if (archive_write_data(x->a, x->rbuf, (size_t)n) < 0) {
        exp_fail(x, BERTH_E_INTERNAL, "export: %s", archive_error_string(x->a));
        exp_finish(x);
        return;
    }
    x->foff += (uint64_t)n;
    exp_pump(x);
}

static void exp_pump(exp_t *x)
{
    while (!x->finished) {
        if (berth_req_canceled(x->req)) {
            exp_fail(x, BERTH_E_CANCELED, "export canceled");
            exp_finish(x);
            return;
        }
        if (x->err) {
            exp_finish(x);
            return;
        }
        if (x->out_len > 0) {
            if (berth_req_stream_credit(x->req) == 0)
                return;
            size_t n = x->out_len < OUT_CHUNK ? x->out_len : OUT_CHUNK;
            berth_req_stream_send_bin(x->req, x->out, n);
            memmove(x->out, x->out + n, x->out_len - n);
            x->out_len -= n;
            continue;
        }
        if (x->reading)
            return;
        if (x->in_entry) {
            xentry_t *e = &x->ents[x->ei];
            if (x->foff < e->size) {
                uint64_t left = e->size - x->foff;
                uv_buf_t b = uv_buf_init(x->rbuf, left < READ_BUF ? (unsigned)left : READ_BUF);
                x->fsreq.data = x;
                x->reading = true;
                if (uv_fs_read(berth_plugin_loop(xfer_ctx->p), &x->fsreq, x->fd, &b, 1,
                               (int64_t)x->foff, exp_read_done) < 0) {
                    x->reading = false;
                    exp_fail(x, BERTH_E_INTERNAL, "export: cannot read %s", e->path);
                }
                return;
            }
            close(x->fd);
            x->fd = -1;
            x->in_entry = false;
            x->ei++;
            continue;
        }
        if (x->ei < x->n_ents) {
            xentry_t *e = &x->ents[x->ei];
            struct archive_entry *ae = archive_entry_new();
            archive_entry_set_pathname(ae, e->name);
            archive_entry_set_size(ae, (la_int64_t)e->size);
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, 0644);
            archive_entry_set_mtime(ae, 0, 0);
            int rc = archive_write_header(x->a, ae);
            archive_entry_free(ae);
            if (rc != ARCHIVE_OK) {
                exp_fail(x, BERTH_E_INTERNAL, "export: %s", archive_error_string(x->a));
                continue;
            }
            if (e->mem) {
                if (e->size && archive_write_data(x->a, e->mem, e->size) < 0)
                    exp_fail(x, BERTH_E_INTERNAL, "export: %s", archive_error_string(x->a));
                x->ei++;
                continue;
            }
            x->fd = open(e->path, O_RDONLY | O_CLOEXEC);
            if (x->fd < 0) {
                exp_fail(x, BERTH_E_INTERNAL, "export: open %s: %s", e->path, strerror(errno));
                continue;
            }
            x->foff = 0;
            x->in_entry = true;
            continue;
        }
        if (!x->closed) {
            x->closed = true;
            archive_write_close(x->a);
            continue;
        }
        exp_finish(x);
        return;
    }
}

static void exp_writable(berth_req_t *r)
{
    exp_pump(berth_req_data(r));
}

static void exp_cancel(berth_req_t *r)
{
    exp_t *x = berth_req_data(r);
    if (x && x->started)
        exp_pump(x);
}

static bool ent_has(exp_t *x, const char *name)
{
    for (size_t i = 0; i < x->n_ents; i++)
        if (strcmp(x->ents[i].name, name) == 0)
            return true;
    return false;
}

static xentry_t *ent_add(exp_t *x, const char *name)
{
    x->ents = realloc(x->ents, (x->n_ents + 1) * sizeof(xentry_t));
    xentry_t *e = &x->ents[x->n_ents++];
    memset(e, 0, sizeof(*e));
    e->name = strdup(name);
    return e;
}

static void ent_blob(exp_t *x, const xfer_desc_t *d, const char *mem, size_t len)
{
    char name[100];
    snprintf(name, sizeof(name), "blobs/sha256/%s", hex_of(d->digest));
    if (ent_has(x, name))
        return;
    xentry_t *e = ent_add(x, name);
    e->size = d->size;
    e->digest = strdup(d->digest);
    if (mem) {
        e->mem = malloc(len ? len : 1);
        memcpy(e->mem, mem, len);
        e->size = len;
    }
}

/* "docker.io/library/busybox:latest" → "busybox:latest" like docker. */
static char *docker_tag(const char *name)
{
    const char *s = name;
    if (strncmp(s, "docker.io/library/", 18) == 0)
        s += 18;
    else if (strncmp(s, "docker.io/", 10) == 0)
        s += 10;
    return strdup(s);
}

static void exp_path(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                     void *ud);

static void exp_start_write(exp_t *x)
{
    x->a = archive_write_new();
    archive_write_set_format_pax_restricted(x->a);
    archive_write_set_bytes_per_block(x->a, 0);
    if (archive_write_open(x->a, x, NULL, exp_write_cb, NULL) != ARCHIVE_OK) {
        exp_fail(x, BERTH_E_INTERNAL, "export: %s", archive_error_string(x->a));
        exp_finish(x);
        return;
    }
    x->rbuf = malloc(READ_BUF);
    x->started = true;
    berth_req_set_writable_cb(x->req, exp_writable);
    exp_pump(x);
}

static void exp_path(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    xentry_t *e = NULL;
    exp_t *x = ud;
    x->pending--;
    if (err) {
        exp_fail(x, err->code, "export: %s", err->message);
    } else {
        const char *dg = NULL;
        size_t dl = 0;
        berth_mp_get_str(res, "digest", &dg, &dl, NULL);
        (void)e;
    }
    if (x->pending == 0) {
        if (x->err)
            exp_finish(x);
        else
            exp_start_write(x);
    }
}

typedef struct {
    exp_t *x;
    size_t i;
} pathreq_t;

static void exp_path_one(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                         void *ud)
{
    pathreq_t *p = ud;
    exp_t *x = p->x;
    if (!err)
        x->ents[p->i].path = berth_mp_strdup(berth_mp_get(res, "path"));
    free(p);
    exp_path(c, err, res, x);
}

static void exp_paths(exp_t *x);

static void exp_held(const berth_error_t *err, void *ud)
{
    exp_t *x = ud;
    if (err) {
        exp_fail(x, err->code, "export: hold the blobs to read: %s", err->message);
        exp_finish(x);
        return;
    }
    exp_paths(x);
}

static void exp_lease_created(const berth_error_t *err, char *lease, void *ud)
{
    exp_t *x = ud;
    x->lease = lease;
    if (err) {
        exp_fail(x, err->code, "export: create a lease to read the blobs: %s", err->message);
        exp_finish(x);
        return;
    }
    char **digests = calloc(x->n_ents ? x->n_ents : 1, sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; digests && i < x->n_ents; i++)
        if (!x->ents[i].mem && x->ents[i].digest)
            digests[n++] = x->ents[i].digest;
    berth_error_t *e = NULL;
    int rc = digests ? xfer_lease_add_blobs(x->ns, lease, digests, n, exp_held, x, &e)
                     : berth_error_set(&e, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    free(digests);
    if (rc == 1) {
        exp_paths(x);
    } else if (rc < 0) {
        exp_fail(x, e->code, "export: hold the blobs to read: %s", e->message);
        berth_error_free(&e);
        exp_finish(x);
    }
}

/* The blob files are read by path, for as long as the client takes to
 * read the tar: a lease holds them meanwhile (content.path requires it), so
 * an `images rm` and a collection during the export do not cut it short. */
static void exp_hold(exp_t *x)
{
    berth_error_t *e = NULL;
    if (xfer_lease_create(x->ns, XFER_READ_LEASE_TTL_NS, exp_lease_created, x, &e) < 0) {
        exp_fail(x, e->code, "export: create a lease to read the blobs: %s", e->message);
        berth_error_free(&e);
        exp_finish(x);
    }
}

static void exp_build(exp_t *x)
{
    /* oci-layout, index.json, manifest.json first: readers find them early. */
    static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
    xentry_t *e = ent_add(x, "oci-layout");
    e->mem = strdup(layout);
    e->size = strlen(layout);

    xfer_desc_t *descs = calloc(x->n_imgs + 1, sizeof(xfer_desc_t));
    json_t *dm = json_array();
    for (size_t i = 0; i < x->n_imgs; i++) {
        xfer_limage_t *img = x->imgs[i];
        xfer_desc_copy(&descs[i], &img->target);
        descs[i].has_platform = false;
        free(descs[i].image_name);
        descs[i].image_name = strdup(img->name);
        xfer_ref_t r;
        if (xfer_ref_parse(img->name, &r, NULL) == 0) {
            free(descs[i].ref_name);
            descs[i].ref_name = r.tag ? strdup(r.tag) : NULL;
            xfer_ref_clear(&r);
        }
        if (img->n_mans > 0) {
            xfer_lman_t *m = &img->mans[0];
            json_t *o = json_object();
            char buf[100];
            snprintf(buf, sizeof(buf), "blobs/sha256/%s", hex_of(m->doc.config.digest));
            json_object_set_new(o, "Config", json_string(buf));
            json_t *tags = json_array();
            char *t = docker_tag(img->name);
            if (!strchr(t, '@'))
                json_array_append_new(tags, json_string(t));
            free(t);
            json_object_set_new(o, "RepoTags", tags);
            json_t *layers = json_array();
            for (size_t l = 0; l < m->doc.n_layers; l++) {
                snprintf(buf, sizeof(buf), "blobs/sha256/%s", hex_of(m->doc.layers[l].digest));
                json_array_append_new(layers, json_string(buf));
            }
            json_object_set_new(o, "Layers", layers);
            json_array_append_new(dm, o);
        }
    }
    size_t ilen = 0;
    char *ij = xfer_index_json(descs, x->n_imgs, &ilen);
    for (size_t i = 0; i < x->n_imgs; i++)
        xfer_desc_clear(&descs[i]);
    free(descs);
    e = ent_add(x, "index.json");
    e->mem = ij;
    e->size = ilen;
    char *mj = json_dumps(dm, JSON_COMPACT);
    json_decref(dm);
    e = ent_add(x, "manifest.json");
    e->mem = mj;
    e->size = strlen(mj);

    for (size_t i = 0; i < x->n_imgs; i++) {
        xfer_limage_t *img = x->imgs[i];
        for (size_t k = 0; k < img->n_docs; k++)
            ent_blob(x, &img->docs[k].desc, img->docs[k].bytes, img->docs[k].len);
        for (size_t k = 0; k < img->n_mans; k++) {
            ent_blob(x, &img->mans[k].doc.config, NULL, 0);
            for (size_t l = 0; l < img->mans[k].doc.n_layers; l++)
                ent_blob(x, &img->mans[k].doc.layers[l], NULL, 0);
        }
    }
    exp_hold(x);
}

/* content.path of every blob file (under the lease), then the tar. */
static void exp_paths(exp_t *x)
{
    x->pending = 1;
    for (size_t i = 0; i < x->n_ents; i++) {
        if (x->ents[i].mem || !x->ents[i].digest)
            continue;
        pathreq_t *p = calloc(1, sizeof(*p));
        p->x = x;
        p->i = i;
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, x->ns, x->lease);
        berth_mp_kv_str(&b.pk, "digest", x->ents[i].digest);
        berth_error_t *err = NULL;
        if (xfer_call("content.path", &b, exp_path_one, p, &err) == 0) {
            x->pending++;
        } else {
            free(p);
            exp_fail(x, err->code, "%s", err->message);
            berth_error_free(&err);
        }
        berth_mpbuf_destroy(&b);
    }
    exp_path(NULL, NULL, NULL, x);
}

static void exp_next(exp_t *x);

static void exp_loaded(const berth_error_t *err, xfer_limage_t *img, void *ud)
{
    exp_t *x = ud;
    if (err) {
        exp_fail(x, err->code, "export: %s", err->message);
        exp_finish(x);
        return;
    }
    x->imgs = realloc(x->imgs, (x->n_imgs + 1) * sizeof(*x->imgs));
    x->imgs[x->n_imgs++] = img;
    x->ri++;
    exp_next(x);
}

static void exp_got(const berth_error_t *err, const msgpack_object *image,
                    const xfer_desc_t *target, void *ud)
{
    exp_t *x = ud;
    if (err) {
        exp_fail(x, err->code, "export: %s", err->message);
        exp_finish(x);
        return;
    }
    char *name = berth_mp_strdup(berth_mp_get(image, "name"));
    berth_error_t *e = NULL;
    if (xfer_limage_load(x->ns, name ? name : x->refs[x->ri], target, x->has_want ? &x->want : NULL,
                         true, false, exp_loaded, x, &e) < 0) {
        exp_fail(x, e->code, "%s", e->message);
        berth_error_free(&e);
        exp_finish(x);
    }
    free(name);
}

static void exp_next(exp_t *x)
{
    if (x->ri >= x->n_refs) {
        exp_build(x);
        return;
    }
    berth_error_t *e = NULL;
    if (xfer_image_get(x->ns, x->refs[x->ri], exp_got, x, &e) < 0) {
        exp_fail(x, e->code, "%s", e->message);
        berth_error_free(&e);
        exp_finish(x);
    }
}

/* Names as users type them are looked up in their normalized form. */
static char *norm_name(const char *s)
{
    xfer_ref_t r;
    if (xfer_ref_parse(s, &r, NULL) < 0)
        return strdup(s);
    char *n = xfer_ref_name(&r);
    xfer_ref_clear(&r);
    return n;
}

void xfer_handle_export(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    const msgpack_object *refs = NULL;
    char *platform = NULL;
    bool all = false;
    if (berth_mp_get_array(params, "refs", &refs, &err) < 0 ||
        berth_mp_get_strdup(params, "platform", &platform, &err) < 0 ||
        berth_mp_get_bool(params, "all_platforms", &all, &err) < 0) {
        berth_req_fail(r, &err);
        return;
    }
    if (!refs || refs->via.array.size == 0) {
        free(platform);
        berth_req_failf(r, BERTH_E_INVALID_ARGUMENT, "images.export needs refs");
        return;
    }
    exp_t *x = calloc(1, sizeof(*x));
    x->fd = -1;
    x->req = r;
    x->ns = strdup(berth_req_namespace(r));
    x->refs = calloc(refs->via.array.size, sizeof(char *));
    for (uint32_t i = 0; i < refs->via.array.size; i++) {
        char *s = berth_mp_strdup(&refs->via.array.ptr[i]);
        if (!s) {
            free(platform);
            exp_free(x);
            berth_req_failf(r, BERTH_E_INVALID_ARGUMENT, "refs must be strings");
            return;
        }
        x->refs[x->n_refs++] = norm_name(s);
        free(s);
    }
    if (!all) {
        x->has_want = true;
        x->want = xfer_ctx->host;
        if (platform && xfer_platform_parse(platform, &x->want, &err) < 0) {
            free(platform);
            exp_free(x);
            berth_req_fail(r, &err);
            return;
        }
    }
    free(platform);
    berth_req_set_data(r, x);
    berth_req_set_cancel_cb(r, exp_cancel);
    exp_next(x);
}

/* ======================================================================== */
/* import                                                                   */
/* ======================================================================== */

typedef struct {
    char *name; /* path in the archive, cleaned */
    char *tmp;  /* extracted file */
    uint64_t size;
    char digest[72];
    char *mem; /* small JSON files kept in memory */
} ifile_t;

typedef struct {
    char *name;
    xfer_desc_t target;
    ssize_t unpack_man; /* index into plan manifests, or -1 */
} iimage_t;

typedef struct {
    xfer_desc_t desc;
    ssize_t file; /* index into files, or -1 for mem */
    char *mem;
    size_t mem_len;
    char **labels; /* k, v pairs (owned) */
    size_t n_labels;
} iblob_t;

typedef struct {
    xfer_desc_t desc;
    xfer_doc_t doc;
    xfer_config_t cfg;
    bool have_cfg;
    char *chain;
} iman_t;

typedef struct {
    berth_req_t *req;
    char *ns;
    char *base_name;
    bool digests, all, no_unpack, has_want;
    xfer_platform_t want;
    char *dir, *tar_path;
    int tar_fd;
    uint64_t tar_off;
    int writes;
    bool ended, worker_started, failed;
    uv_work_t work;
    ifile_t *files;
    size_t n_files;
    berth_error_t *err;
    /* plan */
    iimage_t *imgs;
    size_t n_imgs;
    iblob_t *blobs;
    size_t n_blobs;
    iman_t *mans;
    size_t n_mans;
    char *lease;
    int phase;
    size_t step;
    /* streaming one blob into content */
    berth_call_t *wc;
    int bfd;
    uint64_t boff;
    char *bbuf;
    size_t blen;
    bool bgot, breading, bclosed, bdeferred;
    uv_fs_t bfs;
    berth_mpbuf_t result;
    size_t n_results;
} imp_t;

typedef struct {
    imp_t *m;
    char *data;
    size_t len;
    uv_fs_t fs;
} iwrite_t;

static void imp_next(imp_t *m);

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void imp_free(imp_t *m)
{
    if (m->tar_fd >= 0)
        close(m->tar_fd);
    if (m->bfd >= 0)
        close(m->bfd);
    if (m->dir)
        rm_rf(m->dir);
    free(m->dir);
    free(m->tar_path);
    free(m->ns);
    free(m->base_name);
    for (size_t i = 0; i < m->n_files; i++) {
        free(m->files[i].name);
        free(m->files[i].tmp);
        free(m->files[i].mem);
    }
    free(m->files);
    for (size_t i = 0; i < m->n_imgs; i++) {
        free(m->imgs[i].name);
        xfer_desc_clear(&m->imgs[i].target);
    }
    free(m->imgs);
    for (size_t i = 0; i < m->n_blobs; i++) {
        xfer_desc_clear(&m->blobs[i].desc);
        free(m->blobs[i].mem);
        xfer_strv_free(m->blobs[i].labels, m->blobs[i].n_labels * 2);
    }
    free(m->blobs);
    for (size_t i = 0; i < m->n_mans; i++) {
        xfer_desc_clear(&m->mans[i].desc);
        xfer_doc_clear(&m->mans[i].doc);
        xfer_config_clear(&m->mans[i].cfg);
        free(m->mans[i].chain);
    }
    free(m->mans);
    free(m->lease);
    free(m->bbuf);
    berth_mpbuf_destroy(&m->result);
    berth_error_free(&m->err);
    free(m);
    xfer_release_memory();
}

static void imp_fail(imp_t *m, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void imp_fail(imp_t *m, berth_code_t code, const char *fmt, ...)
{
    m->failed = true;
    if (m->err)
        return;
    m->err = calloc(1, sizeof(*m->err));
    m->err->code = code;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&m->err->message, fmt, ap) < 0)
        m->err->message = NULL;
    va_end(ap);
}

enum { IP_RECV, IP_BLOBS, IP_UNPACK, IP_SAVE, IP_LEASE, IP_DONE };

static void imp_lease_deleted(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                              void *ud)
{
    imp_t *m = ud;
    free(m->lease);
    m->lease = NULL;
    m->phase = IP_DONE;
    imp_next(m);
}

static void imp_end(imp_t *m)
{
    if (m->lease) {
        m->phase = IP_LEASE;
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, m->ns, NULL);
        berth_mp_kv_str(&b.pk, "id", m->lease);
        int rc = xfer_call("leases.delete", &b, imp_lease_deleted, m, NULL);
        berth_mpbuf_destroy(&b);
        if (rc == 0)
            return;
    }
    if (m->err || !m->req) {
        if (m->req)
            berth_req_fail(m->req, &m->err);
    } else {
        /* result: {images: [...]} packed as we went */
        berth_mpbuf_t out;
        berth_mpbuf_init(&out);
        msgpack_pack_map(&out.pk, 1);
        berth_mp_pack_str(&out.pk, "images");
        msgpack_pack_array(&out.pk, m->n_results);
        msgpack_sbuffer_write(&out.buf, m->result.buf.data, m->result.buf.size);
        berth_req_reply_raw(m->req, out.buf.data, out.buf.size);
        berth_mpbuf_destroy(&out);
    }
    imp_free(m);
}

/* -- worker: extract the spooled tar into files, hashing each --------------- */

static char *clean_name(const char *p)
{
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    while (*p == '/')
        p++;
    if (!*p || strlen(p) > 1024)
        return NULL;
    for (const char *s = p; *s;) {
        size_t l = strcspn(s, "/");
        if ((l == 2 && s[0] == '.' && s[1] == '.') || (l == 1 && s[0] == '.'))
            return NULL;
        s += l;
        while (*s == '/')
            s++;
    }
    return strdup(p);
}

static void imp_work(uv_work_t *w)
{
    imp_t *m = w->data;
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    char *buf = malloc(READ_BUF);
    size_t slurped = 0;
    if (archive_read_open_filename(a, m->tar_path, 256 * 1024) != ARCHIVE_OK) {
        imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: not a tar archive: %s",
                 archive_error_string(a));
        goto out;
    }
    struct archive_entry *ae;
    int rc;
    while ((rc = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
        if (archive_entry_filetype(ae) != AE_IFREG)
            continue;
        char *name = clean_name(archive_entry_pathname(ae));
        if (!name)
            continue;
        if (m->n_files >= MAX_ENTRIES) {
            free(name);
            imp_fail(m, BERTH_E_RESOURCE_EXHAUSTED, "import: more than %d files in the archive",
                     MAX_ENTRIES);
            goto out;
        }
        m->files = realloc(m->files, (m->n_files + 1) * sizeof(ifile_t));
        ifile_t *f = &m->files[m->n_files++];
        memset(f, 0, sizeof(*f));
        f->name = name;
        if (asprintf(&f->tmp, "%s/f%zu", m->dir, m->n_files) < 0)
            f->tmp = NULL;
        int fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            imp_fail(m, BERTH_E_INTERNAL, "import: create %s: %s", f->tmp, strerror(errno));
            goto out;
        }
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        la_ssize_t n;
        bool json_candidate = archive_entry_size(ae) <= XFER_MAX_CONFIG;
        size_t memlen = 0;
        while ((n = archive_read_data(a, buf, READ_BUF)) > 0) {
            if (f->size == 0 && buf[0] != '{' && buf[0] != '[')
                json_candidate = false;
            if (json_candidate && slurped + memlen + (size_t)n <= MAX_SLURP_TOTAL &&
                memlen + (size_t)n <= XFER_MAX_CONFIG) {
                f->mem = realloc(f->mem, memlen + (size_t)n + 1);
                memcpy(f->mem + memlen, buf, (size_t)n);
                memlen += (size_t)n;
            } else {
                json_candidate = false;
            }
            EVP_DigestUpdate(ctx, buf, (size_t)n);
            for (la_ssize_t off = 0; off < n;) {
                ssize_t wr = write(fd, buf + off, (size_t)(n - off));
                if (wr < 0) {
                    if (errno == EINTR)
                        continue;
                    imp_fail(m, BERTH_E_RESOURCE_EXHAUSTED, "import: write %s: %s", f->tmp,
                             strerror(errno));
                    close(fd);
                    EVP_MD_CTX_free(ctx);
                    goto out;
                }
                off += wr;
            }
            f->size += (uint64_t)n;
        }
        close(fd);
        unsigned char md[32];
        unsigned int mdl = 0;
        EVP_DigestFinal_ex(ctx, md, &mdl);
        EVP_MD_CTX_free(ctx);
        if (n < 0) {
            imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: %s: %s", f->name,
                     archive_error_string(a));
            goto out;
        }
        memcpy(f->digest, "sha256:", 7);
        for (int i = 0; i < 32; i++)
            snprintf(f->digest + 7 + 2 * i, 3, "%02x", md[i]);
        if (json_candidate && f->mem) {
            f->mem[memlen] = 0;
            slurped += memlen;
        } else {
            free(f->mem);
            f->mem = NULL;
        }
        /* OCI layout blobs are named by their digest: check it. */
        if (strncmp(f->name, "blobs/sha256/", 13) == 0 &&
            strcmp(f->name + 13, f->digest + 7) != 0) {
            imp_fail(m, BERTH_E_FAILED_PRECONDITION,
                     "import: archive blob %s holds bytes with digest %s", f->name, f->digest);
            goto out;
        }
    }
    if (rc != ARCHIVE_EOF)
        imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: broken archive: %s",
                 archive_error_string(a));
out:
    free(buf);
    archive_read_free(a);
}

static ssize_t file_by_name(imp_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_files; i++)
        if (strcmp(m->files[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static ssize_t file_by_digest(imp_t *m, const char *digest)
{
    char name[100];
    snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
    ssize_t i = file_by_name(m, name);
    if (i >= 0)
        return i;
    for (size_t k = 0; k < m->n_files; k++)
        if (strcmp(m->files[k].digest, digest) == 0)
            return (ssize_t)k;
    return -1;
}

/* Returns the blob's index (the array moves as it grows: never keep pointers). */
static size_t blob_add(imp_t *m, const xfer_desc_t *d, ssize_t file, const char *mem, size_t len)
{
    for (size_t i = 0; i < m->n_blobs; i++)
        if (strcmp(m->blobs[i].desc.digest, d->digest) == 0)
            return i;
    m->blobs = realloc(m->blobs, (m->n_blobs + 1) * sizeof(iblob_t));
    iblob_t *b = &m->blobs[m->n_blobs++];
    memset(b, 0, sizeof(*b));
    xfer_desc_copy(&b->desc, d);
    b->file = file;
    if (mem) {
        b->mem = malloc(len + 1);
        memcpy(b->mem, mem, len);
        b->mem_len = len;
    }
    return m->n_blobs - 1;
}

static void blob_label(iblob_t *b, const char *k, const char *v)
{
    b->labels = realloc(b->labels, (b->n_labels + 1) * 2 * sizeof(char *));
    b->labels[2 * b->n_labels] = strdup(k);
    b->labels[2 * b->n_labels + 1] = strdup(v);
    b->n_labels++;
}

static const char *file_bytes(imp_t *m, ssize_t i, size_t *len)
{
    if (i < 0 || !m->files[i].mem)
        return NULL;
    *len = m->files[i].size;
    return m->files[i].mem;
}

/* Plans a manifest: its config and layers must be in the archive. */
static ssize_t plan_manifest(imp_t *m, const xfer_desc_t *d, const char *data, size_t len,
                             xfer_doc_t *doc, const char *plat)
{
    ssize_t cf = file_by_digest(m, doc->config.digest);
    size_t cl = 0;
    const char *cb = file_bytes(m, cf, &cl);
    if (cf < 0 || !cb) {
        imp_fail(m, BERTH_E_NOT_FOUND, "import: image config %s%s%s is missing from the archive",
                 doc->config.digest, plat ? " for platform " : "", plat ? plat : "");
        return -1;
    }
    m->mans = realloc(m->mans, (m->n_mans + 1) * sizeof(iman_t));
    iman_t *im = &m->mans[m->n_mans];
    memset(im, 0, sizeof(*im));
    berth_error_t *e = NULL;
    if (xfer_config_parse(cb, cl, &im->cfg, &e) < 0) {
        imp_fail(m, e->code, "import: config %s: %s", doc->config.digest, e->message);
        berth_error_free(&e);
        return -1;
    }
    im->have_cfg = true;
    char cplat[100];
    if (!plat)
        plat = xfer_platform_format(&im->cfg.platform, cplat, sizeof(cplat));
    xfer_desc_copy(&im->desc, d);
    im->doc = *doc;
    memset(doc, 0, sizeof(*doc));
    ssize_t idx = (ssize_t)m->n_mans++;
    if (im->cfg.n_diff_ids != im->doc.n_layers) {
        imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: config %s has %zu diff ids for %zu layers",
                 im->doc.config.digest, im->cfg.n_diff_ids, im->doc.n_layers);
        return -1;
    }
    if (im->doc.n_layers) {
        char **chain = NULL;
        xfer_chain_ids(im->cfg.diff_ids, im->cfg.n_diff_ids, &chain, NULL);
        im->chain = strdup(chain[im->cfg.n_diff_ids - 1]);
        xfer_strv_free(chain, im->cfg.n_diff_ids);
    }
    size_t mb = blob_add(m, d, -1, data, len);
    for (size_t l = 0; l < im->doc.n_layers; l++) {
        const xfer_desc_t *ld = &im->doc.layers[l];
        ssize_t lf = file_by_digest(m, ld->digest);
        if (lf < 0) {
            imp_fail(m, BERTH_E_NOT_FOUND, "import: layer %s%s%s is missing from the archive",
                     ld->digest, plat ? " for platform " : "", plat ? plat : "");
            return -1;
        }
        if (m->files[lf].size != ld->size) {
            imp_fail(m, BERTH_E_FAILED_PRECONDITION,
                     "import: layer %s is %" PRIu64 " bytes in the archive, %" PRIu64
                     " in its manifest",
                     ld->digest, m->files[lf].size, ld->size);
            return -1;
        }
        blob_add(m, ld, lf, NULL, 0);
        char k[64];
        snprintf(k, sizeof(k), XFER_LABEL_REF_LAYER "%zu", l);
        blob_label(&m->blobs[mb], k, ld->digest);
    }
    blob_label(&m->blobs[mb], XFER_LABEL_REF_CONFIG, im->doc.config.digest);
    size_t cbb = blob_add(m, &im->doc.config, cf, NULL, 0);
    if (!m->no_unpack && im->chain)
        blob_label(&m->blobs[cbb], XFER_LABEL_REF_SNAPSHOT, im->chain);
    return idx;
}

/* Plans an index or manifest found in the archive; returns the manifest to
 * unpack (-1 for none). */
static ssize_t plan_doc(imp_t *m, const xfer_desc_t *d, int depth)
{
    if (depth >= XFER_MAX_INDEX_DEPTH) {
        imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: indexes nested too deep");
        return -1;
    }
    ssize_t f = file_by_digest(m, d->digest);
    size_t len = 0;
    const char *data = file_bytes(m, f, &len);
    char plat[100] = "";
    if (d->has_platform)
        xfer_platform_format(&d->platform, plat, sizeof(plat));
    if (!data) {
        imp_fail(m, BERTH_E_NOT_FOUND, "import: %s%s%s %s is missing from the archive",
                 xfer_mt_is_index(d->media_type) ? "index" : "manifest",
                 plat[0] ? " for platform " : "", plat, d->digest);
        return -1;
    }
    xfer_doc_t doc;
    berth_error_t *e = NULL;
    if (xfer_doc_parse(data, len, d->media_type, &doc, &e) < 0) {
        imp_fail(m, e->code, "import: %s: %s", d->digest, e->message);
        berth_error_free(&e);
        return -1;
    }
    xfer_desc_t dd;
    xfer_desc_copy(&dd, d);
    free(dd.media_type);
    dd.media_type = strdup(doc.media_type);
    ssize_t r = -1;
    if (doc.kind == XFER_DOC_MANIFEST) {
        r = plan_manifest(m, &dd, data, len, &doc, plat[0] ? plat : NULL);
    } else {
        ssize_t best = xfer_index_select(&doc, m->has_want ? &m->want : &xfer_ctx->host);
        size_t ib = blob_add(m, &dd, -1, data, len);
        size_t nl = 0;
        for (size_t i = 0; i < doc.n_manifests && !m->failed; i++) {
            const xfer_desc_t *c = &doc.manifests[i];
            if (!m->all && (ssize_t)i != best)
                continue;
            if (!xfer_mt_is_manifest(c->media_type) && !xfer_mt_is_index(c->media_type))
                continue;
            ssize_t got = plan_doc(m, c, depth + 1);
            if ((ssize_t)i == best)
                r = got;
            char k[64];
            snprintf(k, sizeof(k), XFER_LABEL_REF_MANIFEST "%zu", nl++);
            blob_label(&m->blobs[ib], k, c->digest);
        }
        if (!m->failed && best < 0 && !m->all) {
            char w[100];
            imp_fail(m, BERTH_E_NOT_FOUND, "import: index %s has no manifest for platform %s",
                     d->digest,
                     xfer_platform_format(m->has_want ? &m->want : &xfer_ctx->host, w, sizeof(w)));
        }
    }
    xfer_desc_clear(&dd);
    xfer_doc_clear(&doc);
    return r;
}

static void add_image(imp_t *m, const char *name, const xfer_desc_t *target, ssize_t man)
{
    char *n = norm_name(name);
    for (size_t i = 0; i < m->n_imgs; i++)
        if (strcmp(m->imgs[i].name, n) == 0) {
            free(n);
            return;
        }
    m->imgs = realloc(m->imgs, (m->n_imgs + 1) * sizeof(iimage_t));
    iimage_t *im = &m->imgs[m->n_imgs++];
    im->name = n;
    xfer_desc_copy(&im->target, target);
    im->target.has_platform = false;
    im->unpack_man = man;
}

static void plan_oci(imp_t *m, const char *data, size_t len)
{
    xfer_doc_t idx;
    berth_error_t *e = NULL;
    if (xfer_doc_parse(data, len, XFER_MT_OCI_INDEX, &idx, &e) < 0) {
        imp_fail(m, e->code, "import: index.json: %s", e->message);
        berth_error_free(&e);
        return;
    }
    for (size_t i = 0; i < idx.n_manifests && !m->failed; i++) {
        const xfer_desc_t *d = &idx.manifests[i];
        ssize_t man = plan_doc(m, d, 1);
        if (m->failed)
            break;
        char *name = NULL;
        if (d->image_name)
            name = strdup(d->image_name);
        else if (d->ref_name && m->base_name) {
            if (asprintf(&name, "%s:%s", m->base_name, d->ref_name) < 0)
                name = NULL;
        } else if (d->ref_name && strchr(d->ref_name, '/')) {
            name = strdup(d->ref_name);
        }
        if (name) {
            xfer_ref_t r;
            if (xfer_ref_parse(name, &r, NULL) < 0) {
                imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: image name \"%s\" is invalid", name);
                free(name);
                break;
            }
            xfer_ref_clear(&r);
            add_image(m, name, d, man);
        }
        if (m->digests || !name) {
            char *dn = NULL;
            if (asprintf(&dn, "%s@%s", m->base_name ? m->base_name : "import", d->digest) >= 0) {
                add_image(m, dn, d, man);
                free(dn);
            }
        }
        free(name);
    }
    xfer_doc_clear(&idx);
}

static void plan_docker(imp_t *m, const char *data, size_t len)
{
    xfer_docker_entry_t *ents = NULL;
    size_t n = 0;
    berth_error_t *e = NULL;
    if (xfer_docker_manifest_parse(data, len, &ents, &n, &e) < 0) {
        imp_fail(m, e->code, "import: %s", e->message);
        berth_error_free(&e);
        return;
    }
    for (size_t i = 0; i < n && !m->failed; i++) {
        ssize_t cf = file_by_name(m, ents[i].config);
        if (cf < 0) {
            imp_fail(m, BERTH_E_NOT_FOUND, "import: config %s is missing from the archive",
                     ents[i].config);
            break;
        }
        json_t *man = json_object();
        json_object_set_new(man, "schemaVersion", json_integer(2));
        json_object_set_new(man, "mediaType", json_string(XFER_MT_DOCKER_MANIFEST));
        json_t *cfg = json_object();
        json_object_set_new(cfg, "mediaType", json_string(XFER_MT_DOCKER_CONFIG));
        json_object_set_new(cfg, "digest", json_string(m->files[cf].digest));
        json_object_set_new(cfg, "size", json_integer((json_int_t)m->files[cf].size));
        json_object_set_new(man, "config", cfg);
        json_t *layers = json_array();
        for (size_t l = 0; l < ents[i].n_layers && !m->failed; l++) {
            ssize_t lf = file_by_name(m, ents[i].layers[l]);
            if (lf < 0) {
                imp_fail(m, BERTH_E_NOT_FOUND, "import: layer %s is missing from the archive",
                         ents[i].layers[l]);
                break;
            }
            /* gzip or plain tar: look at the magic bytes. */
            unsigned char mg[2] = {0, 0};
            int fd = open(m->files[lf].tmp, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                if (read(fd, mg, 2) != 2)
                    mg[0] = 0;
                close(fd);
            }
            bool gz = mg[0] == 0x1f && mg[1] == 0x8b;
            json_t *ld = json_object();
            json_object_set_new(ld, "mediaType",
                                json_string(gz ? XFER_MT_DOCKER_LAYER_GZ : XFER_MT_DOCKER_LAYER));
            json_object_set_new(ld, "digest", json_string(m->files[lf].digest));
            json_object_set_new(ld, "size", json_integer((json_int_t)m->files[lf].size));
            json_array_append_new(layers, ld);
        }
        json_object_set_new(man, "layers", layers);
        char *bytes = json_dumps(man, JSON_COMPACT);
        json_decref(man);
        if (m->failed) {
            free(bytes);
            break;
        }
        char dg[72];
        xfer_sha256_digest(bytes, strlen(bytes), dg);
        xfer_desc_t d = {
            .media_type = XFER_MT_DOCKER_MANIFEST, .digest = dg, .size = strlen(bytes)};
        xfer_doc_t doc;
        if (xfer_doc_parse(bytes, strlen(bytes), d.media_type, &doc, &e) < 0) {
            imp_fail(m, e->code, "import: %s", e->message);
            berth_error_free(&e);
            free(bytes);
            break;
        }
        ssize_t mi = plan_manifest(m, &d, bytes, strlen(bytes), &doc, NULL);
        xfer_doc_clear(&doc);
        free(bytes);
        if (m->failed)
            break;
        for (size_t t = 0; t < ents[i].n_repo_tags; t++)
            add_image(m, ents[i].repo_tags[t], &d, mi);
        if (ents[i].n_repo_tags == 0 || m->digests) {
            char *dn = NULL;
            if (asprintf(&dn, "%s@%s", m->base_name ? m->base_name : "import", dg) >= 0) {
                add_image(m, dn, &d, mi);
                free(dn);
            }
        }
    }
    xfer_docker_entries_free(ents, n);
}

static void imp_lease(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                      void *ud)
{
    imp_t *m = ud;
    if (err) {
        imp_fail(m, err->code, "import: create lease: %s", err->message);
        imp_end(m);
        return;
    }
    m->lease = berth_mp_strdup(berth_mp_get(berth_mp_get(res, "lease"), "id"));
    m->phase = IP_BLOBS;
    m->step = 0;
    imp_next(m);
}

static void imp_work_done(uv_work_t *w, int status)
{
    imp_t *m = w->data;
    close(m->tar_fd);
    m->tar_fd = -1;
    unlink(m->tar_path);
    if (m->failed) {
        imp_end(m);
        return;
    }
    ssize_t idx = file_by_name(m, "index.json");
    ssize_t dm = file_by_name(m, "manifest.json");
    size_t len = 0;
    const char *data = NULL;
    if (idx >= 0 && (data = file_bytes(m, idx, &len))) {
        /* An OCI image layout names its version; a present file that is
         * not small JSON is checked as empty (and refused). */
        ssize_t ol = file_by_name(m, "oci-layout");
        size_t ll = 0;
        const char *layout = ol < 0 ? NULL : file_bytes(m, ol, &ll);
        berth_error_t *e = NULL;
        if (xfer_oci_layout_check(ol < 0 ? NULL : layout ? layout : "", ll, &e) < 0) {
            imp_fail(m, e->code, "import: %s", e->message);
            berth_error_free(&e);
        } else {
            plan_oci(m, data, len);
        }
    } else if (dm >= 0 && (data = file_bytes(m, dm, &len)))
        plan_docker(m, data, len);
    else
        imp_fail(m, BERTH_E_INVALID_ARGUMENT,
                 "import: the archive has neither an OCI index.json nor a docker manifest.json");
    if (!m->failed && m->n_imgs == 0)
        imp_fail(m, BERTH_E_INVALID_ARGUMENT, "import: no image in the archive");
    if (m->failed) {
        imp_end(m);
        return;
    }
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, m->ns, NULL);
    berth_mp_kv_i64(&b.pk, "expire", berth_now_ns() + 24LL * 3600 * 1000000000LL);
    berth_error_t *e = NULL;
    if (xfer_call("leases.create", &b, imp_lease, m, &e) < 0) {
        imp_fail(m, e->code, "%s", e->message);
        berth_error_free(&e);
        imp_end(m);
    }
    berth_mpbuf_destroy(&b);
}

static void imp_start_worker(imp_t *m)
{
    if (m->worker_started || m->writes > 0 || !m->ended)
        return;
    m->worker_started = true;
    if (m->failed) {
        imp_end(m);
        return;
    }
    m->work.data = m;
    uv_queue_work(berth_plugin_loop(xfer_ctx->p), &m->work, imp_work, imp_work_done);
}

static void imp_written(uv_fs_t *r)
{
    iwrite_t *w = r->data;
    imp_t *m = w->m;
    ssize_t res = r->result;
    uv_fs_req_cleanup(r);
    m->writes--;
    if (res < 0 || (size_t)res != w->len)
        imp_fail(m, BERTH_E_RESOURCE_EXHAUSTED, "import: spool the archive: %s",
                 res < 0 ? uv_strerror((int)res) : "short write");
    free(w->data);
    free(w);
    if (m->req)
        berth_req_ack(m->req, 1);
    imp_start_worker(m);
}

static void imp_stream(berth_req_t *r, const msgpack_object *data)
{
    imp_t *m = berth_req_data(r);
    if (!data) {
        m->ended = true;
        imp_start_worker(m);
        return;
    }
    const char *p = NULL;
    size_t n = 0;
    if (data->type == MSGPACK_OBJECT_BIN) {
        p = data->via.bin.ptr;
        n = data->via.bin.size;
    } else if (data->type == MSGPACK_OBJECT_STR) {
        p = data->via.str.ptr;
        n = data->via.str.size;
    }
    if (m->failed || n == 0)
        return;
    berth_req_hold_ack(r);
    iwrite_t *w = calloc(1, sizeof(*w));
    w->m = m;
    w->data = malloc(n);
    memcpy(w->data, p, n);
    w->len = n;
    w->fs.data = w;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int64_t off = (int64_t)m->tar_off;
    m->tar_off += n;
    m->writes++;
    if (uv_fs_write(berth_plugin_loop(xfer_ctx->p), &w->fs, m->tar_fd, &b, 1, off, imp_written) <
        0) {
        m->writes--;
        free(w->data);
        free(w);
        imp_fail(m, BERTH_E_INTERNAL, "import: cannot spool the archive");
        berth_req_ack(r, 1);
    }
}

/* -- loop: write blobs, unpack, record ------------------------------------- */

static void blob_pump(imp_t *m);

static void bread_done(uv_fs_t *r)
{
    imp_t *m = r->data;
    ssize_t n = r->result;
    uv_fs_req_cleanup(r);
    m->breading = false;
    if (m->bdeferred) {
        /* content answered while we were reading: go on now */
        m->bdeferred = false;
        if (m->bfd >= 0) {
            close(m->bfd);
            m->bfd = -1;
        }
        m->step++;
        imp_next(m);
        return;
    }
    if (n <= 0) {
        imp_fail(m, BERTH_E_INTERNAL, "import: read blob: %s",
                 n < 0 ? uv_strerror((int)n) : "file shorter than expected");
        if (m->wc)
            berth_call_cancel(m->wc);
        return;
    }
    m->blen = (size_t)n;
    m->boff += (uint64_t)n;
    blob_pump(m);
}

static void blob_pump(imp_t *m)
{
    if (!m->wc || !m->bgot || m->bclosed || m->breading)
        return;
    iblob_t *b = &m->blobs[m->step];
    if (b->file < 0) {
        while (m->boff < b->mem_len && berth_call_stream_credit(m->wc) > 0) {
            size_t n = b->mem_len - m->boff < OUT_CHUNK ? b->mem_len - m->boff : OUT_CHUNK;
            berth_mp_pack_bin(berth_call_stream_begin(m->wc), b->mem + m->boff, n);
            berth_call_stream_end_chunk(m->wc);
            m->boff += n;
        }
        if (m->boff >= b->mem_len) {
            m->bclosed = true;
            berth_call_stream_close(m->wc);
        }
        return;
    }
    if (m->blen > 0) {
        if (berth_call_stream_credit(m->wc) == 0)
            return;
        berth_mp_pack_bin(berth_call_stream_begin(m->wc), m->bbuf, m->blen);
        berth_call_stream_end_chunk(m->wc);
        m->blen = 0;
    }
    if (m->boff >= b->desc.size) {
        m->bclosed = true;
        berth_call_stream_close(m->wc);
        return;
    }
    uint64_t left = b->desc.size - m->boff;
    uv_buf_t ub = uv_buf_init(m->bbuf, left < READ_BUF ? (unsigned)left : READ_BUF);
    m->bfs.data = m;
    m->breading = true;
    if (uv_fs_read(berth_plugin_loop(xfer_ctx->p), &m->bfs, m->bfd, &ub, 1, (int64_t)m->boff,
                   bread_done) < 0) {
        m->breading = false;
        imp_fail(m, BERTH_E_INTERNAL, "import: cannot read blob");
        berth_call_cancel(m->wc);
    }
}

static void bw_writable(berth_call_t *c, void *ud)
{
    blob_pump(ud);
}

static void bw_stream(berth_call_t *c, const msgpack_object *data, void *ud)
{
    imp_t *m = ud;
    if (!data || m->bgot || data->type != MSGPACK_OBJECT_MAP)
        return;
    m->bgot = true;
    bool existed = false;
    uint64_t off = 0;
    berth_mp_get_bool(data, "existed", &existed, NULL);
    berth_mp_get_u64(data, "offset", &off, NULL);
    if (existed) {
        m->bclosed = true;
        return;
    }
    iblob_t *b = &m->blobs[m->step];
    uint64_t size = b->file < 0 ? b->mem_len : b->desc.size;
    m->boff = off <= size ? off : 0;
    blob_pump(m);
}

static void bw_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    imp_t *m = ud;
    m->wc = NULL;
    if (err)
        imp_fail(m, err->code, "import: write blob %s: %s", m->blobs[m->step].desc.digest,
                 err->message);
    if (m->breading) {
        m->bdeferred = true; /* bread_done continues */
        return;
    }
    if (m->bfd >= 0) {
        close(m->bfd);
        m->bfd = -1;
    }
    m->step++;
    imp_next(m);
}

static void write_blob(imp_t *m)
{
    iblob_t *b = &m->blobs[m->step];
    char ref[120];
    snprintf(ref, sizeof(ref), "import-%s", b->desc.digest);
    uint64_t size = b->file < 0 ? b->mem_len : b->desc.size;
    if (b->file >= 0) {
        m->bfd = open(m->files[b->file].tmp, O_RDONLY | O_CLOEXEC);
        if (m->bfd < 0) {
            imp_fail(m, BERTH_E_INTERNAL, "import: open %s: %s", m->files[b->file].tmp,
                     strerror(errno));
            imp_end(m);
            return;
        }
    }
    if (!m->bbuf)
        m->bbuf = malloc(READ_BUF);
    m->bgot = m->bclosed = m->breading = false;
    m->blen = 0;
    m->boff = 0;
    berth_mpbuf_t pb;
    xfer_params_begin(&pb, 3 + (b->n_labels ? 1 : 0), m->ns, m->lease);
    berth_mp_kv_str(&pb.pk, "ref", ref);
    berth_mp_kv_str(&pb.pk, "expected", b->desc.digest);
    berth_mp_kv_u64(&pb.pk, "total", size);
    if (b->n_labels) {
        berth_mp_pack_str(&pb.pk, "labels");
        msgpack_pack_map(&pb.pk, b->n_labels);
        for (size_t i = 0; i < b->n_labels; i++) {
            berth_mp_pack_str(&pb.pk, b->labels[2 * i]);
            berth_mp_pack_str(&pb.pk, b->labels[2 * i + 1]);
        }
    }
    berth_error_t *e = NULL;
    m->wc = berth_call(xfer_ctx->p, "content.write", pb.buf.data, pb.buf.size, 0, bw_done,
                       bw_stream, m, &e);
    berth_mpbuf_destroy(&pb);
    if (!m->wc) {
        imp_fail(m, e->code, "%s", e->message);
        berth_error_free(&e);
        imp_end(m);
        return;
    }
    berth_call_set_writable_cb(m->wc, bw_writable);
}

static void imp_unpacked(const berth_error_t *err, const char *chain, void *ud)
{
    imp_t *m = ud;
    if (err)
        imp_fail(m, err->code, "import: unpack: %s", err->message);
    m->step++;
    imp_next(m);
}

static void imp_saved(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                      void *ud);

static void save_image(imp_t *m, bool update)
{
    iimage_t *im = &m->imgs[m->step];
    berth_mpbuf_t b;
    xfer_params_begin(&b, update ? 2 : 1, m->ns, NULL);
    berth_mp_pack_str(&b.pk, "image");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "name", im->name);
    berth_mp_pack_str(&b.pk, "target");
    xfer_desc_pack(&b.pk, &im->target);
    if (update) {
        berth_mp_pack_str(&b.pk, "fields");
        msgpack_pack_array(&b.pk, 1);
        berth_mp_pack_str(&b.pk, "target");
    }
    berth_error_t *e = NULL;
    if (xfer_call(update ? "images.update" : "images.create", &b, imp_saved, m, &e) < 0) {
        imp_fail(m, e->code, "%s", e->message);
        berth_error_free(&e);
        imp_end(m);
    }
    berth_mpbuf_destroy(&b);
}

static void imp_saved(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                      void *ud)
{
    imp_t *m = ud;
    if (err && err->code == BERTH_E_ALREADY_EXISTS) {
        save_image(m, true);
        return;
    }
    if (err) {
        imp_fail(m, err->code, "import: record image %s: %s", m->imgs[m->step].name, err->message);
    } else {
        const msgpack_object *img = berth_mp_get(res, "image");
        if (img)
            msgpack_pack_object(&m->result.pk, *img);
        else
            msgpack_pack_nil(&m->result.pk);
        m->n_results++;
    }
    m->step++;
    imp_next(m);
}

static void imp_next(imp_t *m)
{
    if (m->failed && m->phase != IP_DONE) {
        imp_end(m);
        return;
    }
    switch (m->phase) {
    case IP_BLOBS:
        if (m->step < m->n_blobs) {
            write_blob(m);
            return;
        }
        m->phase = IP_UNPACK;
        m->step = 0;
        /* fallthrough */
    case IP_UNPACK:
        while (!m->no_unpack && m->step < m->n_imgs) {
            iimage_t *im = &m->imgs[m->step];
            bool dup = false;
            for (size_t k = 0; k < m->step; k++)
                if (m->imgs[k].unpack_man == im->unpack_man)
                    dup = true;
            if (im->unpack_man < 0 || dup) {
                m->step++;
                continue;
            }
            iman_t *man = &m->mans[im->unpack_man];
            xfer_unpack_t *u = xfer_unpack_new(m->ns, m->lease, man->doc.layers, man->cfg.diff_ids,
                                               man->cfg.n_diff_ids, NULL, imp_unpacked, m);
            for (size_t i = 0; i < man->doc.n_layers; i++)
                xfer_unpack_layer_ready(u, i);
            xfer_unpack_start(u);
            return;
        }
        m->phase = IP_SAVE;
        m->step = 0;
        /* fallthrough */
    case IP_SAVE:
        if (m->step < m->n_imgs) {
            save_image(m, false);
            return;
        }
        imp_end(m);
        return;
    case IP_DONE:
        imp_end(m);
        return;
    default:
        return;
    }
}

static void imp_cancel(berth_req_t *r)
{
    imp_t *m = berth_req_data(r);
    imp_fail(m, BERTH_E_CANCELED, "import canceled");
    if (m->phase == IP_RECV && !m->ended) {
        /* No more chunks will come: finish once the spool writes are back. */
        m->ended = true;
        imp_start_worker(m);
    }
}

void xfer_handle_import(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    imp_t *m = calloc(1, sizeof(*m));
    m->tar_fd = m->bfd = -1;
    m->req = r;
    berth_mpbuf_init(&m->result);
    char *platform = NULL;
    if (berth_mp_get_strdup(params, "base_name", &m->base_name, &err) < 0 ||
        berth_mp_get_strdup(params, "platform", &platform, &err) < 0 ||
        berth_mp_get_bool(params, "digests", &m->digests, &err) < 0 ||
        berth_mp_get_bool(params, "all_platforms", &m->all, &err) < 0 ||
        berth_mp_get_bool(params, "no_unpack", &m->no_unpack, &err) < 0)
        goto bad;
    if (platform) {
        if (xfer_platform_parse(platform, &m->want, &err) < 0)
            goto bad;
        m->has_want = true;
    }
    if (m->base_name) {
        xfer_ref_t br;
        if (xfer_ref_parse(m->base_name, &br, &err) < 0)
            goto bad;
        free(m->base_name);
        m->base_name = xfer_ref_repo(&br);
        xfer_ref_clear(&br);
    }
    m->ns = strdup(berth_req_namespace(r));
    char *tmpdir = NULL;
    if (asprintf(&tmpdir, "%s/tmp", berth_plugin_root(xfer_ctx->p)) < 0)
        tmpdir = NULL;
    mkdir(tmpdir, 0700);
    if (asprintf(&m->dir, "%s/import-XXXXXX", tmpdir) < 0)
        m->dir = NULL;
    free(tmpdir);
    if (!m->dir || !mkdtemp(m->dir)) {
        berth_error_errno(&err, errno, "import: create a temp dir");
        free(m->dir);
        m->dir = NULL;
        goto bad;
    }
    if (asprintf(&m->tar_path, "%s/archive", m->dir) < 0)
        m->tar_path = NULL;
    m->tar_fd = open(m->tar_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (m->tar_fd < 0) {
        berth_error_errno(&err, errno, "import: create %s", m->tar_path);
        goto bad;
    }
    free(platform);
    m->phase = IP_RECV;
    berth_req_set_data(r, m);
    berth_req_set_stream_cb(r, imp_stream);
    berth_req_set_cancel_cb(r, imp_cancel);
    return;
bad:
    free(platform);
    m->req = NULL;
    imp_free(m);
    berth_req_fail(r, &err);
}

/* Entry point of berth-transfer-archive.so (impl.h). */
const xfer_archive_impl_t xfer_archive_impl = {
    .abi = XFER_IMPL_ABI,
    .import = xfer_handle_import,
    .export_ = xfer_handle_export,
};

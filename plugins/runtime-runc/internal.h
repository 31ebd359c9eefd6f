/* SPDX-License-Identifier: Apache-2.0 */
/* berth-runtime-runc internals: OCI spec generation (spec.c), the default
 * seccomp profile (seccomp_default.c), user resolution from an image rootfs
 * (user.c) and the task domain helpers (task.c). None of these run an event
 * loop; handlers.c glues them to the SDK. */
#pragma once

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth/common.h"
#include "berth/error.h"

/* ---- limits -------------------------------------------------------------- */

/** Largest image config blob we parse. */
#define RT_MAX_IMAGE_CONFIG (4u * 1024 * 1024)
/** Largest /etc/passwd or /etc/group read from an image. */
#define RT_MAX_ETC_FILE (4u * 1024 * 1024)
/** Largest user-supplied OCI spec or seccomp profile. */
#define RT_MAX_SPEC (4u * 1024 * 1024)
/** Largest exec id / container id. */
#define RT_MAX_ID 76

/* ---- user.c ------------------------------------------------------------- */

typedef struct {
    uint32_t uid, gid;
    uint32_t *additional_gids; /* malloc'd; primary gid first (CVE-2023-25173) */
    size_t n_additional_gids;
} rt_user_t;

void rt_user_clear(rt_user_t *u);

/** Parses a uid/gid as a decimal uint32 (no sign, no spaces, not 2^32-1).
 * Returns 0, or -1 if `s` is not such a number. */
int rt_parse_id(const char *s, size_t len, uint32_t *out);

/** Resolves a USER string ("", "name", "uid", "name:group", "uid:gid", ...)
 * against the image's /etc/passwd and /etc/group, read through `rootfd` (a
 * directory fd of the image root; paths are resolved inside it, symlinks
 * cannot escape; -1 means "no rootfs": only numeric users work). Sets the
 * supplementary groups the way containerd does since CVE-2023-25173: groups
 * that list the user as a member, with the primary gid always included.
 * Errors: invalid_argument (malformed USER, unknown user or group). */
int rt_user_resolve(int rootfd, const char *user, rt_user_t *out, berth_error_t **err);

/** The image's /etc/passwd and /etc/group as read by rt_etc_read (data NULL:
 * the file does not exist). An image's files never change (its snapshots are
 * committed), so the runtime keeps them per image instead of mounting the
 * image for every container. */
typedef struct {
    char *data[2]; /* passwd, group; NUL-terminated */
    size_t len[2];
} rt_etc_t;

int rt_etc_read(int rootfd, rt_etc_t *out, berth_error_t **err);
void rt_etc_clear(rt_etc_t *e);

/** rt_user_resolve with the files from `etc` when it is not NULL (then
 * rootfd is not used). */
int rt_user_resolve_etc(int rootfd, const rt_etc_t *etc, const char *user, rt_user_t *out,
                        berth_error_t **err);

/** Reads a file inside `rootfd` (RESOLVE_IN_ROOT) with a size cap. *out is
 * malloc'd and NUL-terminated. Returns 0, 1 if the file does not exist, or -1. */
int rt_read_in_root(int rootfd, const char *path, size_t cap, char **out, size_t *len,
                    berth_error_t **err);

/* ---- seccomp_default.c -------------------------------------------------- */

/** Builds the default seccomp profile (docker/containerd's allowlist) for a
 * process with the given bounding capabilities (a JSON array of "CAP_*").
 * Names the host's libseccomp does not know are dropped (debug log). The x32
 * ABI is listed only when `with_x32` (the kernel runs x32 binaries). Returns a
 * new reference. */
json_t *rt_seccomp_default(const json_t *bounding_caps, bool with_x32);

/** True if the kernel accepts x32 system calls (CONFIG_X86_X32_ABI on and
 * not disabled). */
bool rt_kernel_has_x32(void);

/* ---- spec.c ------------------------------------------------------------- */

typedef struct {
    char *type;        /* "bind", "tmpfs", ... */
    char *source;      /* bind: resolved host path */
    char *destination; /* absolute path in the container */
    char **options;
    size_t n_options;
} rt_mount_t;

typedef struct {
    char *type; /* "RLIMIT_NOFILE" */
    uint64_t soft, hard;
} rt_rlimit_t;

typedef struct {
    char *key, *value;
} rt_kv_t;

/** Options of containers.create (everything but the id and image). Owns all
 * its strings: free with rt_spec_opts_free(). */
typedef struct {
    char **args; /* NULL: from the image (entrypoint + cmd) */
    size_t n_args;
    char **env; /* K=V, override the image's */
    size_t n_env;
    char *cwd, *user, *hostname;
    bool tty, readonly_rootfs, privileged, net_host;
    int no_new_privileges; /* -1 = default (on unless privileged) */
    rt_mount_t *mounts;
    size_t n_mounts;
    int64_t memory_limit; /* bytes, 0 = none */
    double cpus;          /* 0 = none */
    uint64_t cpu_shares;  /* 0 = none */
    char *cpuset_cpus, *cpuset_mems;
    int64_t pids_limit; /* 0 = none */
    char **cap_add;
    size_t n_cap_add;
    char **cap_drop;
    size_t n_cap_drop;
    rt_kv_t *annotations;
    size_t n_annotations;
    char *seccomp;         /* NULL / "default" / "unconfined" */
    char *seccomp_profile; /* JSON document, or NULL */
    rt_rlimit_t *rlimits;
    size_t n_rlimits;
} rt_spec_opts_t;

void rt_spec_opts_free(rt_spec_opts_t *o);

/** Decodes containers.create params into opts (copies everything). Bind mount
 * sources are validated and resolved here (rt_resolve_bind_source).
 * Errors: invalid_argument / not_found naming the bad field. */
int rt_spec_opts_from_mp(const msgpack_object *params, rt_spec_opts_t *o, berth_error_t **err);

/** Resolves a bind mount source on the host: it must be absolute and exist;
 * every symlink on the way must point inside the directory holding it (a
 * link that leads elsewhere "escapes" and is refused with the real path in the
 * message). *resolved is malloc'd. */
int rt_resolve_bind_source(const char *src, char **resolved, berth_error_t **err);

/** Host facts that shape a spec; rt_host_probe() reads them from the system,
 * tests fill them by hand. */
typedef struct {
    uint64_t nofile_hard;  /* RLIM_INFINITY when unlimited */
    int cap_last_cap;      /* /proc/sys/kernel/cap_last_cap */
    uint64_t cap_bounding; /* this process's CapBnd; 0 = unknown (all). Privileged
                              and --cap-add ALL get only these, like containerd's
                              WithAllCurrentCapabilities: runc cannot grant more */
    json_t *devices;       /* privileged: host devices (linux.devices entries); owned */
    bool x32;              /* the kernel runs x32 binaries (seccomp lists the ABI) */
} rt_host_t;

void rt_host_probe(rt_host_t *h, bool with_devices);
void rt_host_clear(rt_host_t *h);

/** Everything spec generation needs. */
typedef struct {
    const char *id;
    const char *ns;
    const json_t *image_config; /* the OCI image config document, or NULL */
    int rootfd;                 /* image root for user resolution, or -1 */
    const rt_etc_t *etc;        /* or its /etc files, read before (NULL: use rootfd) */
    const rt_host_t *host;
    const char *cgroups_path; /* "/berth/<ns>/<id>" or a systemd slice path */
} rt_spec_input_t;

/** Generates the OCI runtime spec. Returns a new JSON object or NULL with *err. */
json_t *rt_spec_generate(const rt_spec_input_t *in, const rt_spec_opts_t *o, berth_error_t **err);

/** Validates a complete user-supplied spec (bytes of a JSON object) and fills
 * in what berth owns (root.path "rootfs", cgroupsPath when absent). */
json_t *rt_spec_from_user(const void *json, size_t len, const rt_spec_input_t *in,
                          berth_error_t **err);

/** Builds the process object for tasks.exec from the container spec's process
 * and exec options (args, env, cwd, user: numeric only, tty). */
json_t *rt_spec_exec_process(const json_t *spec, const msgpack_object *params, berth_error_t **err);

/** True if runc's start and delete of a container with this spec can be done
 * by the shim itself (berth-shim's fast paths): no hooks of any kind, no
 * Intel RDT, and a pid namespace of its own (not joined by path), so that the
 * kernel has killed every process of the container when its init exits. */
bool rt_spec_fast_lifecycle(const json_t *spec);

/** The image config's diff_ids → chain id of the top layer ("sha256:...").
 * *out malloc'd. An image without layers is invalid_argument. */
int rt_chain_id(const json_t *image_config, char **out, berth_error_t **err);

/** The capability names known to this build, index = capability number. */
extern const char *const rt_cap_names[];
extern const size_t rt_n_cap_names;

/** Returns true if name is a valid container/exec id ([A-Za-z0-9][A-Za-z0-9_.-]*, <= 76). */
bool rt_valid_id(const char *s);

/** Appends a string to a JSON array (helper). */
void rt_json_append_str(json_t *arr, const char *s);

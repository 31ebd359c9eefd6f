/* SPDX-License-Identifier: Apache-2.0 */
/* A stand-in for libFuzzer's main() in normal (gcc, non-fuzz) builds: runs
 * LLVMFuzzerTestOneInput once over every input given, so the committed seed
 * corpus and the saved crash inputs are replayed by `make test`.
 *
 *   fuzz_regress_<name> [-p PREFIX] PATH...
 *
 * A PATH that is a directory contributes each regular file in it (sorted by
 * name); -p limits the files of the directories that follow it to names
 * starting with PREFIX (tests/fuzz/crashes holds every target's crashes).
 * A missing directory is fine (no crashes saved yet). A crash (assert, abort,
 * sanitizer report in an ASan build) fails the test; the name of the input
 * being run is printed first so the failing file is known. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, like in libFuzzer (the apply target sets up its sandbox there). */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static size_t n_run;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "regress: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                fclose(f);
                free(buf);
                fprintf(stderr, "regress: out of memory reading %s\n", path);
                return -1;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        fprintf(stderr, "regress: read %s failed\n", path);
        return -1;
    }
    fprintf(stderr, "regress: %s (%zu bytes)\n", path, len);
    /* An exact-size copy, so an out-of-bounds read past the input is caught
     * by ASan builds just as under libFuzzer. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    if (len)
        memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    n_run++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "regress: open %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (prefix && strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn)
            break;
        names = nn;
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && run_file(path) < 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    const char *prefix = NULL;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            prefix = argv[++i];
            continue;
        }
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            if (run_dir(argv[i], prefix) < 0)
                rc = 1;
        } else if (stat(argv[i], &st) < 0 && errno == ENOENT) {
            continue; /* e.g. no crashes directory yet */
        } else if (run_file(argv[i]) < 0) {
            rc = 1;
        }
    }
    fprintf(stderr, "regress: %zu inputs run without a crash\n", n_run);
    if (n_run == 0) {
        fprintf(stderr, "regress: no input found: the seed corpus is missing\n");
        return 1;
    }
    return rc;
}

/* See harness.h. */
#include "harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

const char *tessera_exe(void) {
    const char *e = getenv("TESSERA_EXE");
    cr_assert(e && *e, "TESSERA_EXE is not set (run the tests through meson test)");
    return e;
}

char *make_tmpdir(void) {
    char *t = strdup("/tmp/tessera-test-XXXXXX");
    cr_assert(mkdtemp(t));
    return t;
}

void write_file(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f, "cannot write %s", p);
    fputs(text, f);
    fclose(f);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void remove_tmpdir(char *dir) {
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void append(char **buf, size_t *len, const char *data, size_t n) {
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
}

static pid_t spawn_in(const char *cwd, const char *const *argv, int out_fd, int err_fd) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (cwd && chdir(cwd) != 0) _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        if (out_fd >= 0) dup2(out_fd, 1);
        if (err_fd >= 0) dup2(err_fd, 2);
        const char *exe = strcmp(argv[0], "tessera") == 0 ? tessera_exe() : argv[0];
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

proc_result run_cmd(const char *cwd, const char *const *argv, int timeout_s) {
    int op[2], ep[2];
    cr_assert(pipe(op) == 0 && pipe(ep) == 0);
    pid_t pid = spawn_in(cwd, argv, op[1], ep[1]);
    close(op[1]);
    close(ep[1]);
    proc_result r = {0, calloc(1, 1), calloc(1, 1)};
    size_t olen = 0, elen = 0;
    double deadline = now() + timeout_s;
    int open_fds = 2;
    struct pollfd p[2] = {{op[0], POLLIN, 0}, {ep[0], POLLIN, 0}};
    while (open_fds > 0) {
        int left = (int)((deadline - now()) * 1000);
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("command timed out after %d s: %s %s", timeout_s, argv[0],
                           argv[1] ? argv[1] : "");
        }
        int n = poll(p, 2, left);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[65536];
            ssize_t k = read(p[i].fd, buf, sizeof buf);
            if (k <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                open_fds--;
            } else if (i == 0) {
                append(&r.out, &olen, buf, (size_t)k);
            } else {
                append(&r.err, &elen, buf, (size_t)k);
            }
        }
    }
    int st;
    waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

void proc_result_free(proc_result *r) {
    free(r->out);
    free(r->err);
}

/* Reads lines from fd until one contains `marker`, copying what follows it into out. */
static void read_marker(int fd, const char *marker, char *out, size_t size) {
    char line[1024];
    size_t len = 0;
    double deadline = now() + 20;
    for (;;) {
        int left = (int)((deadline - now()) * 1000);
        cr_assert(left > 0, "no \"%s\" line within 20 s", marker);
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0) continue;
        char ch;
        ssize_t k = read(fd, &ch, 1);
        cr_assert(k == 1, "process exited before printing \"%s\"", marker);
        if (ch != '\n') {
            if (len < sizeof line - 1) line[len++] = ch;
            continue;
        }
        line[len] = 0;
        len = 0;
        const char *at = strstr(line, marker);
        if (at) {
            snprintf(out, size, "%s", at + strlen(marker));
            return;
        }
    }
}

pid_t spawn_reading(const char *const *argv, int *out_fd) {
    int op[2];
    cr_assert(pipe(op) == 0);
    pid_t pid = spawn_in(NULL, argv, op[1], -1);
    close(op[1]);
    *out_fd = op[0];
    return pid;
}

void wait_marker(int fd, const char *marker, char *out, size_t size) {
    read_marker(fd, marker, out, size);
}

pid_t start_scheduler(char *addr, size_t size) {
    return start_scheduler_with(addr, size, NULL);
}

pid_t start_scheduler_with(char *addr, size_t size, const char *const *extra) {
    int op[2];
    cr_assert(pipe(op) == 0);
    const char *argv[24] = {"tessera", "scheduler", "--listen", "127.0.0.1:0"};
    int n = 4;
    for (int i = 0; extra && extra[i]; i++) {
        cr_assert_lt(n, 23);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid_t pid = spawn_in(NULL, argv, op[1], -1);
    close(op[1]);
    read_marker(op[0], "listening on ", addr, size);
    close(op[0]);
    return pid;
}

pid_t start_worker(const char *addr, int threads, const char *name, const char *cpus) {
    const char *extra[] = {"--cpus", cpus, NULL};
    return start_worker_with(addr, threads, name, cpus ? extra : NULL);
}

pid_t start_worker_with(const char *addr, int threads, const char *name, const char *const *extra) {
    int op[2];
    cr_assert(pipe(op) == 0);
    char t[16];
    snprintf(t, sizeof t, "%d", threads);
    const char *argv[32] = {"tessera",   "worker", "--scheduler", addr,
                            "--threads", t,        "--name",      name};
    int n = 8;
    for (int i = 0; extra && extra[i]; i++) {
        cr_assert_lt(n, 31);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid_t pid = spawn_in(NULL, argv, op[1], -1);
    close(op[1]);
    char rest[256];
    read_marker(op[0], "ready on ", rest, sizeof rest);
    close(op[0]);
    return pid;
}

int stop_proc(pid_t pid) {
    kill(pid, SIGTERM);
    double deadline = now() + 5;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) break;
        if (now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static uint64_t mix(uint64_t s, uint64_t i) {
    uint64_t z = s + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ref_random_f64(uint64_t seed, uint64_t i) {
    return (double)(mix(seed, i) >> 11) / 9007199254740992.0; /* 2^53 */
}

float ref_random_f32(uint64_t seed, uint64_t i) {
    return (float)((double)(mix(seed, i) >> 40) / 16777216.0); /* 2^24 */
}

int read_npy(const char *path, npy_data *d) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    d->raw = malloc((size_t)len + 1);
    d->rawlen = fread(d->raw, 1, (size_t)len, f);
    fclose(f);
    d->raw[d->rawlen] = 0;
    if (d->rawlen < 10 || memcmp(d->raw, "\x93NUMPY", 6) != 0) return -1;
    size_t hl = (unsigned char)d->raw[8] | (size_t)(unsigned char)d->raw[9] << 8;
    size_t start = 10 + hl;
    if (start > d->rawlen) return -1;
    char *hdr = strndup(d->raw + 10, hl);
    d->f32 = strstr(hdr, "'<f4'") != NULL;
    if (!d->f32 && !strstr(hdr, "'<f8'")) return -1;
    char *sh = strstr(hdr, "'shape': (");
    if (!sh) return -1;
    sh += strlen("'shape': (");
    d->n = 1;
    while (*sh && *sh != ')') {
        char *end;
        long long v = strtoll(sh, &end, 10);
        if (end == sh) break;
        d->shape[d->ndim++] = v;
        d->n *= v;
        sh = end;
        while (*sh == ',' || *sh == ' ') sh++;
    }
    free(hdr);
    size_t es = d->f32 ? 4 : 8;
    if (start + (size_t)d->n * es != d->rawlen) return -1;
    d->v = malloc(sizeof(double) * (size_t)(d->n ? d->n : 1));
    for (int64_t i = 0; i < d->n; i++) {
        if (d->f32) {
            float x;
            memcpy(&x, d->raw + start + (size_t)i * 4, 4);
            d->v[i] = x;
        } else {
            memcpy(&d->v[i], d->raw + start + (size_t)i * 8, 8);
        }
    }
    return 0;
}

void npy_free(npy_data *d) {
    free(d->v);
    free(d->raw);
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static pid_t tracked[64];

pid_t proc_track(pid_t pid) {
    for (size_t i = 0; i < 64; i++)
        if (!tracked[i]) {
            tracked[i] = pid;
            return pid;
        }
    cr_assert_fail("more than 64 tracked processes");
    return pid;
}

void proc_untrack(pid_t pid) {
    for (size_t i = 0; i < 64; i++)
        if (tracked[i] == pid) tracked[i] = 0;
}

void proc_reap_tracked(void) {
    for (size_t i = 0; i < 64; i++) {
        if (tracked[i] <= 0) continue;
        kill(tracked[i], SIGCONT);
        kill(tracked[i], SIGKILL);
        waitpid(tracked[i], NULL, 0);
        tracked[i] = 0;
    }
}

int proc_wait_exit(pid_t pid, double timeout_s) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            proc_untrack(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) * 1e-9 >
            timeout_s)
            return -1;
        usleep(10000);
    }
}

/* The engine end to end with real processes: `tessera run` and `tessera submit` on a blocked
 * matmul checked against a naive product, determinism across worker counts, executor pinning,
 * and a scheduler that survives hostile connections. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* A ragged blocked matmul whose B is rechunked along k (chunks 13 vs 10), plus a reduction. */
static const char *mm_prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [70, 50], \"chunks\": [16, 13], \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [50, 40], \"chunks\": [10, 17], \"seed\": 2},\n"
    " \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
    " \"t\": {\"op\": \"sum\", \"args\": [\"C\"], \"axis\": null}\n"
    "}, \"outputs\": {\"C\": \"c.npy\", \"t\": \"-\"}}\n";

static void check_mm(const char *dir, const char *out) {
    char path[512];
    snprintf(path, sizeof path, "%s/c.npy", dir);
    npy_data d;
    cr_assert(read_npy(path, &d) == 0, "cannot read %s", path);
    cr_assert_eq(d.ndim, 2);
    cr_assert_eq(d.shape[0], 70);
    cr_assert_eq(d.shape[1], 40);
    double total = 0;
    for (int i = 0; i < 70; i++)
        for (int j = 0; j < 40; j++) {
            double s = 0;
            for (int k = 0; k < 50; k++)
                s += ref_random_f64(1, (uint64_t)(i * 50 + k)) *
                     ref_random_f64(2, (uint64_t)(k * 40 + j));
            total += s;
            double got = d.v[i * 40 + j];
            cr_assert(fabs(got - s) <= 1e-12 * fabs(s), "C[%d,%d] = %.17g, want %.17g", i, j, got,
                      s);
        }
    npy_free(&d);
    const char *t = strstr(out, "t: ");
    cr_assert(t, "no printed t in:\n%s", out);
    double got = strtod(t + 3, NULL);
    cr_assert(fabs(got - total) <= 1e-11 * total, "t = %.17g, want %.17g", got, total);
}

Test(cluster, run_matmul, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "mm.json", mm_prog);
    const char *argv[] = {"tessera", "run", "--workers", "2", "mm.json", NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    check_mm(dir, r.out);
    /* Quiet on a non-terminal: no progress bar on stderr. */
    cr_assert(strchr(r.err, '\r') == NULL, "progress drawn on a pipe:\n%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(cluster, submit_to_running_scheduler, .timeout = 120) {
    char addr[128];
    pid_t s = start_scheduler(addr, sizeof addr);
    pid_t w1 = start_worker(addr, 1, "w1", NULL);
    pid_t w2 = start_worker(addr, 2, "w2", NULL);
    pid_t w3 = start_worker(addr, 1, "w3", NULL);
    char *dir = make_tmpdir();
    write_file(dir, "mm.json", mm_prog);
    for (int round = 0; round < 2; round++) {
        const char *argv[] = {"tessera", "submit", "--scheduler", addr, "mm.json", NULL};
        proc_result r = run_cmd(dir, argv, 100);
        cr_assert_eq(r.status, 0, "submit round %d exit %d:\n%s", round, r.status, r.err);
        check_mm(dir, r.out);
        proc_result_free(&r);
    }
    cr_assert_eq(stop_proc(w1), 0);
    cr_assert_eq(stop_proc(w2), 0);
    cr_assert_eq(stop_proc(w3), 0);
    cr_assert_eq(stop_proc(s), 0, "the scheduler did not stop cleanly on SIGTERM");
    remove_tmpdir(dir);
}

static const char *det_prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [300, 260], \"chunks\": [64, 48], \"seed\": 3},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [260, 200], \"chunks\": 48, \"seed\": 4},\n"
    " \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
    " \"D\": {\"op\": \"sum\", \"args\": [\"C\"], \"axis\": 0},\n"
    " \"E\": {\"op\": \"mean\", \"args\": [\"A\"], \"axis\": 1},\n"
    /* Blocks where libxsmm computes some products and OpenBLAS the edges (kernels/gemm.c). */
    " \"P\": {\"op\": \"random\", \"shape\": [300, 260], \"chunks\": [128, 96], \"seed\": 5},\n"
    " \"Q\": {\"op\": \"random\", \"shape\": [260, 200], \"chunks\": [96, 128], \"seed\": 6,"
    " \"dtype\": \"float32\"},\n"
    " \"F\": {\"op\": \"matmul\", \"args\": [\"P\", \"Q\"]},\n"
    /* Float64 chunks of 256 to 2048 and a last chunk of 100 on every side (rows, k, columns):
     * products over packed tiles (kernels/gemm_pack.c), the edges' panels padded. */
    " \"R\": {\"op\": \"random\", \"shape\": [900, 1000], \"chunks\": [400, 450], \"seed\": 7},\n"
    " \"S\": {\"op\": \"random\", \"shape\": [1000, 870], \"chunks\": [450, 385], \"seed\": 8},\n"
    " \"G\": {\"op\": \"matmul\", \"args\": [\"R\", \"S\"]},\n"
    /* A computed operand: its chunks are packed by PACK tasks, not remade (array/lower.c). */
    " \"R2\": {\"op\": \"mul\", \"args\": [\"R\", 2]},\n"
    " \"H\": {\"op\": \"matmul\", \"args\": [\"R2\", \"S\"]}\n"
    "}, \"outputs\": {\"C\": \"c.npy\", \"D\": \"d.npy\", \"E\": \"e.npy\", \"F\": \"f.npy\", "
    "\"G\": \"g.npy\", \"H\": \"h.npy\"}}\n";

static npy_data run_det(const char *workers, const char *threads, const char *name) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", det_prog);
    const char *argv[] = {"tessera",   "run",   "--workers", workers,
                          "--threads", threads, "p.json",    NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    npy_data d;
    cr_assert(read_npy(path, &d) == 0);
    remove_tmpdir(dir);
    return d;
}

Test(cluster, deterministic_across_workers, .timeout = 180) {
    const char *names[] = {"c.npy", "d.npy", "e.npy", "f.npy", "g.npy", "h.npy"};
    npy_data one[6], three[6];
    for (int i = 0; i < 6; i++) one[i] = run_det("1", "1", names[i]);
    for (int i = 0; i < 6; i++) three[i] = run_det("3", "2", names[i]);
    /* The packed product against a naive one, every 7th row and column: each element is a
     * chain of fused multiply-adds, within a few ulps of the plain sum. */
    cr_assert_eq(one[4].n, 900 * 870);
    for (int i = 0; i < 900; i += 7)
        for (int j = 0; j < 870; j += 7) {
            double s = 0, mag = 0;
            for (int k = 0; k < 1000; k++) {
                double p = ref_random_f64(7, (uint64_t)(i * 1000 + k)) *
                           ref_random_f64(8, (uint64_t)(k * 870 + j));
                s += p;
                mag += fabs(p);
            }
            double got = one[4].v[i * 870 + j];
            cr_assert(fabs(got - s) <= 1e-13 * mag, "G[%d,%d] = %.17g, want %.17g", i, j, got, s);
            got = one[5].v[i * 870 + j];
            cr_assert(fabs(got - 2 * s) <= 2e-13 * mag, "H[%d,%d] = %.17g, want %.17g", i, j, got,
                      2 * s);
        }
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(one[i].rawlen, three[i].rawlen, "%s sizes differ", names[i]);
        cr_assert(memcmp(one[i].raw, three[i].raw, one[i].rawlen) == 0,
                  "%s differs between 1 worker and 3 workers x 2 threads", names[i]);
        npy_free(&one[i]);
        npy_free(&three[i]);
    }
}

/* The cores the thread's affinity allows, from /proc (Cpus_allowed_list). */
static void affinity(pid_t pid, const char *tid, char *out, size_t size) {
    char path[320], line[512];
    snprintf(path, sizeof path, "/proc/%d/task/%s/status", pid, tid);
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            char *p = line + 18;
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strcspn(p, "\n");
            if (n >= size) n = size - 1; /* a list longer than the caller's room is cut */
            memcpy(out, p, n);
            out[n] = 0;
        }
    fclose(f);
}

/* Collects the affinity of every "tsr-exec-*" thread of pid; returns how many. */
static int exec_threads(pid_t pid, char cores[][64], int max) {
    char path[256];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.') continue;
        char cpath[512], comm[64] = "";
        snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/comm", pid, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (!f) continue;
        if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0;
        fclose(f);
        if (strncmp(comm, "tsr-exec-", 9) == 0) affinity(pid, e->d_name, cores[n++], 64);
    }
    closedir(d);
    return n;
}

static int is_single_core(const char *list) {
    if (!*list) return 0;
    for (const char *p = list; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

Test(cluster, executor_threads_pinned_to_one_core_each, .timeout = 60) {
    char addr[128];
    pid_t s = start_scheduler(addr, sizeof addr);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    pid_t w1 = start_worker(addr, 2, "p1", "0");
    pid_t w2 = start_worker(addr, 1, "p2", ncpu > 1 ? "1" : "0");
    char cores[8][64];
    int n = exec_threads(w1, cores, 8);
    cr_assert_eq(n, 2, "worker p1 has %d executor threads, want 2", n);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(cores[i], "0", "p1 executor bound to \"%s\", want core 0", cores[i]);
    n = exec_threads(w2, cores, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(cores[0], ncpu > 1 ? "1" : "0");
    stop_proc(w1);
    stop_proc(w2);
    stop_proc(s);
}

/* Finds the pids of processes whose parent is ppid and whose cmdline contains "worker". */
static int child_workers(pid_t ppid, pid_t *out, int max) {
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0) continue;
        char path[256], buf[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        int pp = -1;
        if (fgets(buf, sizeof buf, f)) {
            char *rp = strrchr(buf, ')');
            if (rp) sscanf(rp + 2, "%*c %d", &pp);
        }
        fclose(f);
        if (pp != ppid) continue;
        snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
        f = fopen(path, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < k; i++)
            if (!buf[i]) buf[i] = ' ';
        buf[k] = 0;
        if (strstr(buf, " worker ")) out[n++] = pid;
    }
    closedir(d);
    return n;
}

/* The value of name in the process's environment (/proc/PID/environ), "" when it has none. */
static void environ_value(pid_t pid, const char *name, char *out, size_t size) {
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = 0;
    size_t len = strlen(name);
    for (size_t i = 0; i < k; i += strlen(buf + i) + 1)
        if (strncmp(buf + i, name, len) == 0 && buf[i + len] == '=') {
            snprintf(out, size, "%s", buf + i + len + 1);
            return;
        }
}

/* Starts `tessera run [--workers N] big.json` in dir (N > 0), stdout and stderr to /dev/null,
 * with OPENBLAS_NUM_THREADS set to blas (unset when NULL) and GOTO_ and OMP_NUM_THREADS unset.
 * Returns its pid. */
static pid_t spawn_run(const char *dir, const char *blas, int workers) {
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", 1);
        dup2(nul, 1);
        dup2(nul, 2);
        if (chdir(dir) != 0) _exit(126);
        unsetenv("GOTO_NUM_THREADS");
        unsetenv("OMP_NUM_THREADS");
        if (blas)
            setenv("OPENBLAS_NUM_THREADS", blas, 1);
        else
            unsetenv("OPENBLAS_NUM_THREADS");
        char nw[16];
        snprintf(nw, sizeof nw, "%d", workers);
        if (workers > 0)
            execl(tessera_exe(), "tessera", "run", "--workers", nw, "big.json", (char *)NULL);
        else
            execl(tessera_exe(), "tessera", "run", "big.json", (char *)NULL);
        _exit(127);
    }
    cr_assert(pid > 0);
    return pid;
}

/* Each worker of `tessera run` runs on its own core, and with OPENBLAS_NUM_THREADS=1 whatever the
 * caller's is (client/local.c: OpenBLAS's own threads would spin beside the executors). */
Test(cluster, run_gives_each_worker_its_own_core, .timeout = 120) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char *dir = make_tmpdir();
    /* Long enough to inspect the workers while it runs. */
    write_file(dir, "big.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [2048, 2048], \"chunks\": 256},"
               "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"A\"]},"
               "\"D\": {\"op\": \"matmul\", \"args\": [\"C\", \"A\"]},"
               "\"t\": {\"op\": \"sum\", \"args\": [\"D\"]}}, \"outputs\": {\"t\": \"-\"}}");
    pid_t pid = spawn_run(dir, "4", 2);
    pid_t w[4];
    int nw = 0;
    char cores[2][8][64], blas[2][16] = {"", ""};
    int nth[2] = {0, 0};
    for (int tries = 0; tries < 400; tries++) {
        nw = child_workers(pid, w, 4);
        if (nw == 2) {
            nth[0] = exec_threads(w[0], cores[0], 8);
            nth[1] = exec_threads(w[1], cores[1], 8);
            environ_value(w[0], "OPENBLAS_NUM_THREADS", blas[0], sizeof blas[0]);
            environ_value(w[1], "OPENBLAS_NUM_THREADS", blas[1], sizeof blas[1]);
            if (nth[0] == 1 && nth[1] == 1) break;
        }
        usleep(25000);
    }
    cr_assert_eq(nw, 2, "found %d worker processes of tessera run", nw);
    cr_assert(nth[0] == 1 && nth[1] == 1, "executor threads: %d and %d", nth[0], nth[1]);
    cr_assert(is_single_core(cores[0][0]) && is_single_core(cores[1][0]),
              "executors not bound to one core: \"%s\" \"%s\"", cores[0][0], cores[1][0]);
    if (ncpu >= 2)
        cr_assert_str_neq(cores[0][0], cores[1][0], "two workers share core %s", cores[0][0]);
    cr_assert(strcmp(blas[0], "1") == 0 && strcmp(blas[1], "1") == 0,
              "workers' OPENBLAS_NUM_THREADS: \"%s\" and \"%s\", want \"1\"", blas[0], blas[1]);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Every cluster process is gone. */
    cr_assert_eq(child_workers(pid, w, 4), 0);
    remove_tmpdir(dir);
}

/* `tessera run` itself, started with none of OPENBLAS_/GOTO_/OMP_NUM_THREADS, runs with
 * OPENBLAS_NUM_THREADS=1 (python-free-cli/main.c: it executes itself again so that OpenBLAS's
 * constructor starts no spinning thread); one the caller set is kept. /proc/PID/environ shows
 * the environment an image was started with, so only the second image can show the 1. */
Test(cluster, run_starts_no_blas_threads_of_its_own, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "big.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [2048, 2048], \"chunks\": 256},"
               "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"A\"]},"
               "\"t\": {\"op\": \"sum\", \"args\": [\"C\"]}}, \"outputs\": {\"t\": \"-\"}}");
    const char *given[2] = {NULL, "3"}, *want[2] = {"1", "3"};
    for (int c = 0; c < 2; c++) {
        pid_t pid = spawn_run(dir, given[c], 0);
        char blas[16] = "";
        pid_t w[4];
        for (int tries = 0; tries < 400; tries++) {
            environ_value(pid, "OPENBLAS_NUM_THREADS", blas, sizeof blas);
            if (!strcmp(blas, want[c]) && child_workers(pid, w, 4) > 0) break;
            usleep(10000);
        }
        cr_assert_str_eq(blas, want[c], "tessera run's OPENBLAS_NUM_THREADS, started with %s",
                         given[c] ? given[c] : "none");
        int st;
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    remove_tmpdir(dir);
}

Test(cluster, interrupt_stops_cluster_and_leaves_no_file, .timeout = 60) {
    char *dir = make_tmpdir();
    write_file(dir, "big.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [3000, 3000], \"chunks\": 300},"
               "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"A\"]},"
               "\"D\": {\"op\": \"matmul\", \"args\": [\"C\", \"C\"]}},"
               "\"outputs\": {\"D\": \"d.npy\"}}");
    pid_t pid = spawn_run(dir, "4", 2);
    pid_t w[4];
    for (int tries = 0; tries < 400 && child_workers(pid, w, 4) < 2; tries++) usleep(25000);
    usleep(300000);
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 130, "exit status %d after SIGINT",
              WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    cr_assert_eq(dir_entries(dir), 1, "files left behind after an interrupted run");
    /* The workers were reaped (kill(pid, 0) fails for a reaped process). */
    usleep(100000);
    for (int i = 0; i < 2; i++) cr_assert(kill(w[i], 0) != 0, "worker %d still alive", w[i]);
    remove_tmpdir(dir);
}

/* ---- hostile connections ---- */

static int dial(const char *addr) {
    char host[64];
    int port;
    const char *colon = strrchr(addr, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    port = atoi(colon + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_frame(int fd, msgpack_sbuffer *sb) {
    uint8_t len[4] = {(uint8_t)(sb->size >> 24), (uint8_t)(sb->size >> 16),
                      (uint8_t)(sb->size >> 8), (uint8_t)sb->size};
    cr_assert(write(fd, len, 4) == 4);
    cr_assert(write(fd, sb->data, sb->size) == (ssize_t)sb->size);
}

/* Reads until EOF; returns the bytes read (the server closed the connection). */
static ssize_t drain_until_closed(int fd, char *buf, size_t size) {
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, buf + got, size - got - 1);
        if (k <= 0) {
            cr_assert(k == 0, "the scheduler did not close the connection");
            break;
        }
        got += (size_t)k;
        if (got >= size - 1) break;
    }
    buf[got] = 0;
    return (ssize_t)got;
}

Test(cluster, hostile_frames_close_only_that_connection, .timeout = 120) {
    char addr[128];
    pid_t s = start_scheduler(addr, sizeof addr);
    pid_t w = start_worker(addr, 1, "w", NULL);
    char buf[4096];

    /* A header length over the limit. */
    int fd = dial(addr);
    cr_assert(write(fd, "\xff\xff\xff\xff", 4) == 4);
    drain_until_closed(fd, buf, sizeof buf);
    close(fd);

    /* A header that is not msgpack. */
    fd = dial(addr);
    cr_assert(write(fd, "\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", 9) == 9);
    drain_until_closed(fd, buf, sizeof buf);
    close(fd);

    /* A truncated frame, then the client goes away. */
    fd = dial(addr);
    cr_assert(write(fd, "\x00\x00\x01\x00\x82", 5) == 5);
    close(fd);

    /* A peer of protocol version 1 (before heartbeat) gets an error naming both versions,
     * then a close. */
    fd = dial(addr);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "hello", 5);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "role", 4);
    msgpack_pack_str_with_body(&pk, "client", 6);
    send_frame(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
    ssize_t got = drain_until_closed(fd, buf, sizeof buf);
    cr_assert(got > 4, "no error reply to a wrong version");
    cr_assert(memmem(buf, (size_t)got, "protocol version mismatch: got 1, want 3", 40),
              "the error does not name both versions");
    close(fd);

    /* A payload length over the limit in an otherwise valid header. */
    fd = dial(addr);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "submit", 6);
    msgpack_pack_str_with_body(&pk, "n", 1);
    msgpack_pack_uint64(&pk, (uint64_t)1 << 62);
    send_frame(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
    drain_until_closed(fd, buf, sizeof buf);
    close(fd);

    /* Everyone else is still served. */
    char *dir = make_tmpdir();
    write_file(dir, "mm.json", mm_prog);
    const char *argv[] = {"tessera", "submit", "--scheduler", addr, "mm.json", NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "submit after hostile connections failed:\n%s", r.err);
    check_mm(dir, r.out);
    proc_result_free(&r);
    cr_assert_eq(kill(s, 0), 0, "the scheduler died");
    stop_proc(w);
    cr_assert_eq(stop_proc(s), 0);
    remove_tmpdir(dir);
}

/* Addresses may be host names: a worker and a client reach a scheduler listening on
 * 127.0.0.1 through "localhost" (looked up, not special-cased), and a name that does not
 * resolve fails with a message naming it. The processes are stopped before any check, so a
 * failure leaves none behind. */
Test(cluster, host_names_as_addresses, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "mm.json", mm_prog);
    const char *bad[] = {"tessera", "submit", "--scheduler", "nosuch.invalid:1", "mm.json", NULL};
    proc_result r = run_cmd(dir, bad, 60);
    cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "nosuch.invalid") && !strstr(r.err, "expected HOST:PORT"),
              "the error does not name the host, or calls it malformed:\n%s", r.err);
    proc_result_free(&r);

    char addr[128], named[160];
    pid_t s = start_scheduler(addr, sizeof addr);
    snprintf(named, sizeof named, "localhost:%s", strrchr(addr, ':') + 1);
    pid_t w = start_worker(named, 1, "w1", NULL);
    const char *argv[] = {"tessera", "submit", "--scheduler", named, "mm.json", NULL};
    r = run_cmd(dir, argv, 100);
    int wst = stop_proc(w), sst = stop_proc(s);
    cr_assert_eq(r.status, 0, "submit to %s: exit %d:\n%s", named, r.status, r.err);
    check_mm(dir, r.out);
    cr_assert_eq(wst, 0);
    cr_assert_eq(sst, 0);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* The network client (client/) through the public API: interrupts end one call only, replies to
 * an interrupted read never reach a later one, freeing an array sends nothing until the client's
 * next network call, a monitor's snapshots answer the call that asked, an embedded cluster dies
 * with its creator, and the failure messages of save and start_local say what and where. Real
 * clusters from the `tessera` executable, and fake schedulers speaking the wire protocol. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_wire.h"
#include "harness.h"
#include "tessera/tessera.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static tsr_client *local_cluster(int workers) {
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = workers;
    lo.tessera_path = tessera_exe();
    tsr_client *c = NULL;
    cr_assert_eq(tsr_client_start_local(&lo, &c), 0, "%s", tsr_last_error());
    return c;
}

/* A computed n x n float64 array of `value`, in chunks of k. */
static tsr_array *computed_full(tsr_client *c, int64_t n, int64_t k, double value) {
    int64_t shape[2] = {n, n}, chunks[2] = {k, k};
    tsr_array *a;
    cr_assert_eq(tsr_full(c, 2, shape, chunks, TSR_FLOAT64, value, &a), 0, "%s",
                 tsr_client_errmsg(c));
    cr_assert_eq(tsr_compute(c, &a, 1, NULL), 0, "%s", tsr_client_errmsg(c));
    return a;
}

/* Reads a and checks that every element is `value`. */
static void read_expect(tsr_array *a, int64_t n, double value) {
    double *buf = malloc((size_t)(n * n) * sizeof *buf);
    cr_assert(buf);
    int rc = tsr_array_read(a, buf, (size_t)(n * n) * sizeof *buf);
    cr_assert_eq(rc, 0, "read of %s: %s (%s)", tsr_array_name(a), tsr_strerror(rc),
                 tsr_client_errmsg(tsr_array_client(a)));
    for (int64_t i = 0; i < n * n; i++)
        cr_assert_eq(buf[i], value, "%s[%lld] = %g, expected %g", tsr_array_name(a), (long long)i,
                     buf[i], value);
    free(buf);
}

static void interrupt_cb(const tsr_progress *p, void *user) {
    (void)p;
    tsr_client_interrupt(user);
}

/* An interrupt ends the call it interrupts (or, sent between calls, none): the calls after it
 * run, and read what was computed before it. */
Test(client, interrupt_ends_one_call, .timeout = 120) {
    tsr_client *c = local_cluster(2);
    tsr_array *a = computed_full(c, 64, 32, 2.0);
    tsr_client_interrupt(c); /* no call in progress */
    read_expect(a, 64, 2.0);
    tsr_array *b = computed_full(c, 64, 32, 3.0);
    read_expect(b, 64, 3.0);

    /* An interrupt inside a computation (from its progress callback, on the calling thread). */
    int64_t shape[2] = {512, 512}, chunks[2] = {64, 64};
    tsr_array *r, *s;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 1, &r), 0);
    cr_assert_eq(tsr_matmul(r, r, &s), 0);
    tsr_compute_options co;
    tsr_compute_options_default(&co);
    co.progress_interval_ms = 0;
    co.progress = interrupt_cb;
    co.user = c;
    int rc = tsr_compute(c, &s, 1, &co);
    cr_assert(rc == TSR_EINTERRUPTED || rc == 0, "%s", tsr_strerror(rc));
    read_expect(a, 64, 2.0);
    tsr_array *d = computed_full(c, 64, 16, 4.0);
    read_expect(d, 64, 4.0);
    tsr_array_free(d);
    tsr_array_free(s);
    tsr_array_free(r);
    tsr_array_free(b);
    tsr_array_free(a);
    tsr_client_free(c);
}

typedef struct pester {
    tsr_client *c;
    atomic_int stop;
} pester;

static void *pester_main(void *arg) {
    pester *p = arg;
    while (!atomic_load(&p->stop)) {
        tsr_client_interrupt(p->c);
        usleep(100);
    }
    return NULL;
}

/* A read interrupted with chunk requests in flight: their replies arrive after it returned, and
 * must be dropped, neither written into the next read's buffer (another array of the same
 * shape, other values) nor delivered into a freed array. */
Test(client, late_chunks_are_dropped, .timeout = 180) {
    tsr_client *c = local_cluster(2);
    const int64_t n = 512;
    tsr_array *a = computed_full(c, n, 32, 1.0); /* 256 chunks of 8 KiB */
    tsr_array *b = computed_full(c, n, 32, 5.0);
    double *buf = malloc((size_t)(n * n) * sizeof *buf);
    cr_assert(buf);
    int interrupted = 0;
    for (int attempt = 0; attempt < 20 && !interrupted; attempt++) {
        pester p = {c, 0};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, pester_main, &p), 0);
        int rc = tsr_array_read(a, buf, (size_t)(n * n) * sizeof *buf);
        atomic_store(&p.stop, 1);
        pthread_join(th, NULL);
        cr_assert(rc == 0 || rc == TSR_EINTERRUPTED, "%s", tsr_client_errmsg(c));
        interrupted = rc == TSR_EINTERRUPTED;
    }
    cr_assert(interrupted, "no read was interrupted");
    free(buf);
    read_expect(b, n, 5.0);
    tsr_array_free(a);
    read_expect(b, n, 5.0);
    tsr_array_free(b);
    tsr_client_free(c);
}

/* The whole tree of `pid`'s descendants, from /proc/PID/task/TID/children. */
static int children_of(pid_t pid, pid_t *out, int max) {
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[384];
        snprintf(path, sizeof path, "%s/%s/children", dir, e->d_name);
        FILE *f = fopen(path, "r");
        int v;
        while (f && n < max && fscanf(f, "%d", &v) == 1) out[n++] = v;
        if (f) fclose(f);
    }
    if (d) closedir(d);
    return n;
}

/* The first line of a /proc file, newline dropped ("?" when it cannot be read). */
static void proc_line(const char *path, char *out, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f || !fgets(out, (int)size, f)) snprintf(out, size, "?");
    if (f) fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

/* What a process that should have ended is doing, for the failure message: its command, and
 * each thread's name, state and wait channel, and its own children (a sanitizer's symbolizer,
 * say). */
static void describe_proc(pid_t pid, char *out, size_t size) {
    char path[384], line[256], comm[64], wchan[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    size_t len = f ? fread(line, 1, sizeof line - 1, f) : 0;
    if (f) fclose(f);
    line[len] = '\0';
    for (size_t i = 0; i + 1 < len; i++)
        if (line[i] == '\0') line[i] = ' ';
    size_t at = (size_t)snprintf(out, size, "\n  pid %d: %s", (int)pid, line);
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && at < size && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/comm", (int)pid, e->d_name);
        proc_line(path, comm, sizeof comm);
        snprintf(path, sizeof path, "/proc/%d/task/%s/wchan", (int)pid, e->d_name);
        proc_line(path, wchan, sizeof wchan);
        snprintf(path, sizeof path, "/proc/%d/task/%s/stat", (int)pid, e->d_name);
        proc_line(path, line, sizeof line);
        const char *st = strrchr(line, ')');
        at += (size_t)snprintf(out + at, size - at, "\n    thread %s %s: %c in %s", e->d_name, comm,
                               st && st[1] ? st[2] : '?', wchan);
    }
    if (d) closedir(d);
    pid_t sub[8];
    int ns = children_of(pid, sub, 8);
    for (int k = 0; k < ns && at < size; k++) {
        snprintf(path, sizeof path, "/proc/%d/comm", (int)sub[k]);
        proc_line(path, comm, sizeof comm);
        at += (size_t)snprintf(out + at, size - at, "\n    child %d: %s", (int)sub[k], comm);
    }
}

/* A program that starts a local cluster and exits without tsr_client_free (as a crash or a
 * return from main would): the scheduler and workers must exit within seconds, not live on
 * with another parent. The test process is their subreaper, so it can see them end.
 * In ASan builds the cluster's processes run without the exit-time leak check
 * (detect_leaks=0, inherited from the creator): twice in about fifteen CI runs both workers
 * hung in it, the check's tracer child stuck and the main thread waiting on it for over 10 s,
 * after the worker had stopped (describe_proc's report). What this test checks is that they
 * stop; the other suites keep checking the workers for leaks. */
Test(client, local_cluster_dies_with_its_creator, .timeout = 120) {
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    int pfd[2];
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0); /* the cluster must not hold it open */
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        close(pfd[0]);
        char asan[1024];
        const char *was = getenv("ASAN_OPTIONS");
        snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", was ? was : "", was && *was ? ":" : "");
        setenv("ASAN_OPTIONS", asan, 1);
        tsr_local_options lo;
        tsr_local_options_default(&lo);
        lo.workers = 2;
        lo.tessera_path = tessera_exe();
        tsr_client *c;
        if (tsr_client_start_local(&lo, &c) != 0) _exit(3);
        pid_t kids[16];
        int k = children_of(getpid(), kids, 16);
        if (write(pfd[1], kids, (size_t)k * sizeof *kids) < 0) _exit(4);
        _exit(0); /* no tsr_client_free */
    }
    close(pfd[1]);
    pid_t kids[16];
    ssize_t got = 0, r;
    while ((r = read(pfd[0], (char *)kids + got, sizeof kids - (size_t)got)) > 0) got += r;
    close(pfd[0]);
    int st;
    cr_assert_eq(waitpid(child, &st, 0), child);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the creator failed: %d", st);
    int n = (int)(got / (ssize_t)sizeof *kids);
    cr_assert_eq(n, 3, "expected a scheduler and 2 workers, found %d processes", n);
    double deadline = now_s() + 10;
    int alive = n;
    while (alive > 0 && now_s() < deadline) {
        alive = 0;
        for (int i = 0; i < n; i++) {
            if (kids[i] <= 0) continue;
            if (waitpid(kids[i], NULL, WNOHANG) == kids[i])
                kids[i] = 0;
            else
                alive++;
        }
        if (alive) usleep(20000);
    }
    char why[2048] = "";
    for (int i = 0; i < n; i++)
        if (kids[i] > 0) {
            describe_proc(kids[i], why + strlen(why), sizeof why - strlen(why));
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    cr_assert_eq(alive, 0, "%d cluster processes outlived their creator by 10 s:%s", alive, why);
}

/* Saving names the array and the path in every failure. */
Test(client, save_errors_name_array_and_path, .timeout = 120) {
    tsr_client *c = local_cluster(1);
    tsr_array *a = computed_full(c, 8, 4, 1.0);
    cr_assert_eq(tsr_array_set_name(a, "weights"), 0);
    char *dir = make_tmpdir();
    char missing[512], fifo[512];
    snprintf(missing, sizeof missing, "%s/no/such/dir/w.npy", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo.npy", dir);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    const char *paths[] = {missing, dir, "/proc/tessera-cannot-write.npy", fifo};
    for (size_t k = 0; k < sizeof paths / sizeof *paths; k++) {
        int rc = tsr_array_save_npy(a, paths[k]);
        cr_assert(rc < 0, "saving to %s succeeded", paths[k]);
        const char *msg = tsr_client_errmsg(c);
        cr_assert(strstr(msg, paths[k]), "the message does not name the path: %s", msg);
        cr_assert(strstr(msg, "\"weights\""), "the message does not name the array: %s", msg);
    }
    /* The pipe, still a pipe, and nothing else. */
    cr_assert_eq(dir_entries(dir), 1, "a failed save left a file behind");
    struct stat st;
    cr_assert(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the pipe was replaced");
    /* A character device is written in place and stays a device: the test's own copy of
     * /dev/null where it may make one (root), else /dev/null itself. */
    char dev[512];
    snprintf(dev, sizeof dev, "%s/nul", dir);
    if (mknod(dev, S_IFCHR | 0666, makedev(1, 3)) != 0) snprintf(dev, sizeof dev, "/dev/null");
    cr_assert_eq(tsr_array_save_npy(a, dev), 0, "%s", tsr_client_errmsg(c));
    cr_assert(stat(dev, &st) == 0 && S_ISCHR(st.st_mode), "%s is not a device now", dev);
    remove_tmpdir(dir);
    tsr_array_free(a);
    tsr_client_free(c);
}

/* tsr_client_save_stats writes tsr_client_stats_json's object through the library's one
 * temp-file writer: nothing before a computation, zero tasks after computing nothing, a named
 * path and no temporary file on failure. */
Test(client, save_stats, .timeout = 120) {
    tsr_client *c = local_cluster(1);
    char *dir = make_tmpdir();
    char path[512], bad[600];
    snprintf(path, sizeof path, "%s/st.json", dir);
    snprintf(bad, sizeof bad, "%s/missing/st.json", dir);
    cr_assert_eq(tsr_client_save_stats(c, path), TSR_ENOTCOMPUTED);
    cr_assert_eq(tsr_compute(c, NULL, 0, NULL), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_client_save_stats(c, path), 0, "%s", tsr_client_errmsg(c));
    json_t *j = json_load_file(path, 0, NULL);
    cr_assert(j);
    cr_assert_eq(json_integer_value(json_object_get(j, "tasks")), 0);
    json_decref(j);
    tsr_array *a = computed_full(c, 8, 4, 1.0);
    cr_assert_eq(tsr_client_save_stats(c, path), 0, "%s", tsr_client_errmsg(c));
    j = json_load_file(path, 0, NULL);
    char *text = tsr_client_stats_json(c);
    json_t *k = json_loads(text, 0, NULL);
    cr_assert(j && k && json_equal(j, k), "the file is not tsr_client_stats_json:\n%s", text);
    cr_assert_eq(json_integer_value(json_object_get(j, "tasks")), 4);
    json_decref(j);
    json_decref(k);
    free(text);
    cr_assert_eq(tsr_client_save_stats(c, bad), -ENOENT);
    cr_assert(strstr(tsr_client_errmsg(c), bad), "%s", tsr_client_errmsg(c));
    cr_assert_eq(dir_entries(dir), 1, "a temporary file was left behind");
    remove_tmpdir(dir);
    tsr_array_free(a);
    tsr_client_free(c);
}

/* start_local's failure to start the executable says which one it tried and how to choose. */
Test(client, start_local_says_where_it_looked, .timeout = 60) {
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = 1;
    lo.tessera_path = "/nonexistent/bin/tessera";
    tsr_client *c = NULL;
    cr_assert_eq(tsr_client_start_local(&lo, &c), TSR_ESPAWN);
    cr_assert_null(c);
    cr_assert(strstr(tsr_last_error(), "/nonexistent/bin/tessera") &&
                  strstr(tsr_last_error(), "tessera_path"),
              "%s", tsr_last_error());

    /* The default: the installed executable, else `tessera` on PATH (emptied here). */
    char *dir = make_tmpdir();
    setenv("PATH", dir, 1);
    lo.tessera_path = NULL;
    int rc = tsr_client_start_local(&lo, &c);
    if (rc == 0) {
        tsr_client_free(c); /* an installed tessera exists here: nothing to check */
    } else {
        const char *msg = tsr_last_error();
        cr_assert(strstr(msg, "PATH") && strstr(msg, "installed") && strstr(msg, "tessera_path"),
                  "%s", msg);
    }
    remove_tmpdir(dir);
}

/* ---- fake schedulers ---- */

typedef struct fake {
    int lfd;
    char addr[64];
    pthread_t th;
    int sync[2]; /* the test writes a byte when it has freed the array */
    int early;   /* a frame arrived before the client's next network call */
    int released;
    int monitor_ok;
} fake;

static void fake_listen(fake *f, void *(*fn)(void *)) {
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(f->lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(f->lfd, 4) == 0 &&
              getsockname(f->lfd, (struct sockaddr *)&a, &al) == 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert(pthread_create(&f->th, NULL, fn, f) == 0);
}

static void fake_join(fake *f) {
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->th, NULL);
    close(f->lfd);
}

static int send_welcome(int fd, msgpack_sbuffer *sb, msgpack_packer *pk) {
    msgpack_pack_map(pk, 3);
    pstr(pk, "t"), pstr(pk, "welcome"), pstr(pk, "v"), msgpack_pack_int(pk, 1);
    pstr(pk, "id"), msgpack_pack_int(pk, 1);
    return send_frame(fd, sb, NULL, 0);
}

/* Accepts the client's connection and answers its hello with a welcome: the connected socket,
 * or -1 (closed) when the client did not start with a hello. */
static int accept_client(int lfd, msgpack_sbuffer *sb, msgpack_packer *pk) {
    char type[32];
    int c = accept(lfd, NULL, NULL);
    if (c < 0) return -1;
    if (read_frame(c, type, sizeof type, NULL) || strcmp(type, "hello") ||
        send_welcome(c, sb, pk)) {
        close(c);
        return -1;
    }
    return c;
}

/* Computes a job of one output, then watches what the client sends after the array is freed. */
static void *release_fake(void *arg) {
    fake *f = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char type[32];
    int c = accept_client(f->lfd, &sb, &pk);
    if (c < 0) goto out;
    if (read_frame(c, type, sizeof type, NULL) || strcmp(type, "submit")) goto out;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "accepted"), pstr(&pk, "job"), msgpack_pack_int(&pk, 7);
    pstr(&pk, "tasks"), msgpack_pack_int(&pk, 1);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "finished"), pstr(&pk, "job"), msgpack_pack_int(&pk, 7);
    pstr(&pk, "outputs"), msgpack_pack_array(&pk, 1), msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 0), pstr(&pk, f->addr), msgpack_pack_int(&pk, 8);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    char b;
    if (read(f->sync[0], &b, 1) != 1) goto out;
    /* The old client wrote its release inside tsr_array_free: it would be here already. */
    struct pollfd p = {c, POLLIN, 0};
    f->early = poll(&p, 1, 300) > 0;
    while (read_frame(c, type, sizeof type, NULL) == 0)
        if (!strcmp(type, "release")) f->released = 1;
out:
    if (c >= 0) close(c);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

/* tsr_array_free sends nothing and runs no loop; the release goes at tsr_client_free. */
Test(client, array_free_defers_the_release, .timeout = 60) {
    fake f = {0};
    cr_assert_eq(pipe(f.sync), 0);
    fake_listen(&f, release_fake);
    tsr_client *c;
    cr_assert_eq(tsr_client_connect(f.addr, NULL, &c), 0, "%s", tsr_last_error());
    tsr_array *a;
    cr_assert_eq(tsr_full(c, 0, NULL, NULL, TSR_FLOAT64, 3.0, &a), 0);
    cr_assert_eq(tsr_compute(c, &a, 1, NULL), 0, "%s", tsr_client_errmsg(c));
    tsr_array_free(a);
    cr_assert_eq(write(f.sync[1], "x", 1), 1);
    /* Let the fake look for an early frame before the client talks again. */
    usleep(400000);
    tsr_client_free(c);
    fake_join(&f);
    close(f.sync[0]);
    close(f.sync[1]);
    cr_assert_not(f.early, "tsr_array_free sent a message");
    cr_assert(f.released, "the release never reached the scheduler");
}

/* A monitor whose snapshot at hello comes late, after the first request went out (as it can on
 * a busy scheduler): each call must return the snapshot it asked for (seq 1, then 2), never the
 * one from hello (seq 0). */
static void *monitor_fake(void *arg) {
    fake *f = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char type[32];
    int c = accept_client(f->lfd, &sb, &pk);
    if (c < 0) goto out;
    int seq = 0, ok = 1;
    for (int call = 0; call < 2 && ok; call++) {
        if (read_frame(c, type, sizeof type, NULL) || strcmp(type, "info")) goto out;
        /* The hello snapshot, late, goes first; then the reply, a little later (were both in
         * one read, a client that took the first for the reply would still end up with the
         * second). */
        for (int k = call == 0 ? 0 : 1; k < 2 && ok; k++) {
            if (k == 1 && call == 0) usleep(200000);
            msgpack_pack_map(&pk, 2);
            pstr(&pk, "t"), pstr(&pk, "info"), pstr(&pk, "done_total"),
                msgpack_pack_int(&pk, seq++);
            ok = send_frame(c, &sb, NULL, 0) == 0;
        }
    }
    f->monitor_ok = ok;
    while (read_frame(c, type, sizeof type, NULL) == 0) {
    }
out:
    if (c >= 0) close(c);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

static int snapshot_seq(tsr_client *c) {
    char *s = NULL;
    int rc = tsr_client_info_json(c, 10000, &s);
    cr_assert_eq(rc, 0, "%s", tsr_client_errmsg(c));
    json_t *j = json_loads(s, 0, NULL);
    cr_assert(j, "not JSON: %s", s);
    int seq = (int)json_integer_value(json_object_get(j, "done_total"));
    json_decref(j);
    free(s);
    return seq;
}

Test(client, monitor_snapshot_answers_its_call, .timeout = 60) {
    fake f = {0};
    fake_listen(&f, monitor_fake);
    tsr_client *c;
    cr_assert_eq(tsr_client_connect_monitor(f.addr, NULL, &c), 0, "%s", tsr_last_error());
    int first = snapshot_seq(c);
    int second = snapshot_seq(c);
    tsr_client_free(c);
    fake_join(&f);
    cr_assert(f.monitor_ok);
    cr_assert_eq(first, 1, "the first call returned snapshot %d (0 is the one from hello)", first);
    cr_assert_eq(second, 2, "the second call returned snapshot %d", second);
}

/* A snapshot with one part that does not decode (wlist is not a list): the monitor keeps the
 * rest and says why through the logger in its options, at the level it asked for. */
static void *bad_part_fake(void *arg) {
    fake *f = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char type[32];
    int c = accept_client(f->lfd, &sb, &pk);
    if (c < 0) goto out;
    if (read_frame(c, type, sizeof type, NULL) || strcmp(type, "info")) goto out;
    for (int k = 0; k < 2; k++) { /* the hello snapshot, then the reply */
        msgpack_pack_map(&pk, 3);
        pstr(&pk, "t"), pstr(&pk, "info"), pstr(&pk, "done_total"), msgpack_pack_int(&pk, k);
        pstr(&pk, "wlist"), msgpack_pack_int(&pk, 5);
        if (send_frame(c, &sb, NULL, 0)) goto out;
    }
    f->monitor_ok = 1;
    while (read_frame(c, type, sizeof type, NULL) == 0) {
    }
out:
    if (c >= 0) close(c);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

typedef struct log_rec {
    int lines, worst;
    char last[512];
} log_rec;

static void record_log(void *cookie, int level, const char *msg) {
    log_rec *r = cookie;
    r->lines++;
    if (r->lines == 1 || level < r->worst) r->worst = level;
    snprintf(r->last, sizeof r->last, "%s", msg);
}

Test(client, logger_in_the_options_hears_the_client, .timeout = 60) {
    for (int with_level = 0; with_level < 2; with_level++) {
        fake f = {0};
        fake_listen(&f, bad_part_fake);
        log_rec rec = {0};
        tsr_client_options o;
        tsr_client_options_default(&o);
        for (size_t k = 0; k < sizeof o.reserved; k++) cr_assert_eq(o.reserved[k], 0);
        o.logger.callback = record_log;
        o.logger.cookie = &rec;
        if (!with_level) o.log_level = TSR_LOG_ERROR; /* warnings are dropped */
        tsr_client *c;
        cr_assert_eq(tsr_client_connect_monitor(f.addr, &o, &c), 0, "%s", tsr_last_error());
        char *s = NULL;
        cr_assert_eq(tsr_client_info_json(c, 10000, &s), 0, "%s", tsr_client_errmsg(c));
        json_t *j = json_loads(s, 0, NULL);
        cr_assert(j, "not JSON: %s", s);
        cr_assert_eq(json_integer_value(json_object_get(j, "done_total")), 1);
        cr_assert_null(json_object_get(j, "wlist"), "a part that does not decode was kept");
        json_decref(j);
        free(s);
        tsr_client_free(c);
        fake_join(&f);
        cr_assert(f.monitor_ok);
        if (with_level) {
            cr_assert_eq(rec.lines, 2, "%d lines", rec.lines);
            cr_assert_eq(rec.worst, TSR_LOG_WARN);
            cr_assert(strstr(rec.last, "info") && strstr(rec.last, "wlist"), "%s", rec.last);
        } else {
            cr_assert_eq(rec.lines, 0, "a warning passed log_level ERROR: %s", rec.last);
        }
    }
}

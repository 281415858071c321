/* The servers-as-handles scenario of test_servers.c without Criterion (whose runner cannot start
 * under ThreadSanitizer here), for a -Db_sanitize=thread build: two schedulers and four workers on
 * threads of this process, one client computation per scheduler at once, stop from another
 * thread, free. TSan checks the loop/executor handoff, the stop async and the client paths. Exits
 * 0 and prints "ok" when everything ran and no error was logged. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdatomic.h>
#include "tessera/tessera.h"

#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
static atomic_int errors;
static void record(void *cookie, int level, const char *msg) {
    (void)cookie;
    if (level == TSR_LOG_ERROR) {
        atomic_fetch_add(&errors, 1);
        fprintf(stderr, "log error: %s\n", msg);
    }
}
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int nready;
static void on_ready(const char *a, void *u) {
    (void)a;
    (void)u;
    pthread_mutex_lock(&mu);
    nready++;
    pthread_mutex_unlock(&mu);
}
typedef struct {
    tsr_scheduler *s;
    tsr_worker *w;
    pthread_t th;
    int rc;
} server;
static void *serve(void *arg) {
    server *sv = arg;
    sv->rc = sv->s ? tsr_scheduler_run(sv->s) : tsr_worker_run(sv->w);
    return NULL;
}
typedef struct {
    const char *addr;
    uint64_t seed;
    int rc;
    double d[20 * 20];
} job;
static void *client_job(void *arg) {
    job *j = arg;
    tsr_client *c;
    tsr_array *A = NULL, *B = NULL, *D = NULL;
    j->rc = tsr_client_connect(j->addr, NULL, &c);
    if (j->rc) return NULL;
    int64_t sh[2] = {20, 20}, ch[2] = {8, 8};
    int rc = tsr_random(c, 2, sh, ch, TSR_FLOAT64, j->seed, &A);
    if (!rc) rc = tsr_random(c, 2, sh, ch, TSR_FLOAT64, j->seed + 1, &B);
    if (!rc) rc = tsr_matmul(A, B, &D);
    if (!rc) rc = tsr_compute(c, &D, 1, NULL);
    if (!rc) rc = tsr_array_read(D, j->d, sizeof j->d);
    j->rc = rc;
    tsr_array_free(A);
    tsr_array_free(B);
    tsr_array_free(D);
    tsr_client_free(c);
    return NULL;
}
static void *stop_all(void *arg) {
    server *sv = arg;
    for (int i = 0; i < 6; i++) {
        if (sv[i].s) tsr_scheduler_stop(sv[i].s);
        if (sv[i].w) tsr_worker_stop(sv[i].w);
    }
    return NULL;
}
int main(void) {
    signal(SIGPIPE, SIG_IGN);
    server sv[6];
    memset(sv, 0, sizeof sv);
    for (int i = 0; i < 2; i++) {
        tsr_scheduler_options o;
        tsr_scheduler_options_default(&o);
        o.listen = "127.0.0.1:0";
        o.logger.callback = record;
        CHECK(tsr_scheduler_new(&o, &sv[i].s) == 0, "new");
    }
    for (int i = 0; i < 4; i++) {
        tsr_worker_options o;
        tsr_worker_options_default(&o);
        o.scheduler = tsr_scheduler_address(sv[i / 2].s);
        char n[8];
        snprintf(n, sizeof n, "w%d", i);
        o.name = n;
        o.on_ready = on_ready;
        o.logger.callback = record;
        CHECK(tsr_worker_new(&o, &sv[2 + i].w) == 0, "wnew");
    }
    for (int i = 0; i < 6; i++) pthread_create(&sv[i].th, NULL, serve, &sv[i]);
    for (int k = 0; k < 600; k++) {
        pthread_mutex_lock(&mu);
        int n = nready;
        pthread_mutex_unlock(&mu);
        if (n == 4) break;
        usleep(50000);
    }
    job j[2] = {{tsr_scheduler_address(sv[0].s), 1, -1, {0}},
                {tsr_scheduler_address(sv[1].s), 7, -1, {0}}};
    pthread_t ct[2];
    for (int i = 0; i < 2; i++) pthread_create(&ct[i], NULL, client_job, &j[i]);
    for (int i = 0; i < 2; i++) pthread_join(ct[i], NULL);
    for (int i = 0; i < 2; i++) CHECK(j[i].rc == 0, "job %d: %s", i, tsr_strerror(j[i].rc));
    pthread_t st;
    pthread_create(&st, NULL, stop_all, sv);
    pthread_join(st, NULL);
    for (int i = 0; i < 6; i++) {
        pthread_join(sv[i].th, NULL);
        CHECK(sv[i].rc == 0, "rc %d", sv[i].rc);
    }
    for (int i = 0; i < 6; i++) {
        tsr_scheduler_free(sv[i].s);
        tsr_worker_free(sv[i].w);
    }
    CHECK(errors == 0, "errors");
    puts("ok");
    return 0;
}

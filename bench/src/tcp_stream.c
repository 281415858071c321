/* Raw loopback TCP stream, the ceiling for chunk transfers between two workers: a forked
 * receiver on 127.0.0.1 reads TOTAL MiB that the parent writes in MSG MiB writes (TCP_NODELAY),
 * then acknowledges with one byte. Adapted from the peer measurements' tcp_bw.c.
 * Usage: tcp_stream TOTAL_MIB MSG_MIB   prints "seconds GB/s" (GB = 1e9 bytes). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *m) {
    perror(m);
    exit(1);
}

static void xwrite(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k <= 0) die("write");
        p += k;
        n -= (size_t)k;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tcp_stream TOTAL_MIB MSG_MIB\n");
        return 2;
    }
    size_t total = (size_t)atol(argv[1]) << 20, msg = (size_t)atol(argv[2]) << 20;
    if (!total || !msg) return 2;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (void *)&a, &al))
        die("bind");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        int s = accept(ls, NULL, NULL);
        if (s < 0) die("accept");
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char *buf = malloc(msg);
        size_t got = 0;
        while (got < total) {
            ssize_t k = read(s, buf, msg);
            if (k <= 0) die("read");
            got += (size_t)k;
        }
        xwrite(s, "k", 1);
        _exit(0);
    }
    close(ls);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a)) die("connect");
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = malloc(msg);
    if (!buf) die("malloc");
    memset(buf, 7, msg);
    double t0 = now();
    for (size_t sent = 0; sent < total; sent += msg) xwrite(s, buf, msg);
    char ack;
    if (read(s, &ack, 1) != 1) die("read ack");
    double t = now() - t0;
    printf("%.6f %.3f\n", t, total / t / 1e9);
    close(s);
    waitpid(pid, NULL, 0);
    free(buf);
    return 0;
}

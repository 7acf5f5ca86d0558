/* traffic: the benchmark's bounded traffic generator and sinks. Every loop stops at a packet or
 * byte count and at a time limit, whichever comes first.
 *
 *   traffic udp DST PORT SIZE COUNT SECONDS      send COUNT datagrams of SIZE payload bytes as
 *                                                fast as possible; "sent=N errors=E seconds=T"
 *   traffic tcp-send DST PORT SECONDS            one connection, write for SECONDS;
 *                                                "bytes=N seconds=T"
 *   traffic tcp-sink ADDR PORT SECONDS           accept one connection, read to EOF;
 *                                                "ready", then "bytes=N seconds=T"
 *   traffic tcp-listen ADDR PORT SECONDS         accept and close connections until SECONDS
 *   traffic connect DST PORT COUNT SECONDS       COUNT sequential connects (RST-closed, so no
 *                                                TIME_WAIT piles up); one "us=N" line each, then
 *                                                "connects=N failures=F"
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in address(const char *ip, const char *port) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, ip, &sin.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", ip);
        exit(2);
    }
    return sin;
}

static int udp_send(char **argv) {
    struct sockaddr_in dst = address(argv[0], argv[1]);
    size_t size = (size_t)atol(argv[2]);
    unsigned long long count = strtoull(argv[3], NULL, 10);
    double seconds = atof(argv[4]);
    if (size > 65000)
        size = 65000;
    char *payload = calloc(1, size ? size : 1);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("udp socket");
        return 1;
    }
    unsigned long long sent = 0, errors = 0, i = 0;
    double start = now(), end = start + seconds, t = start;
    for (i = 0; i < count; i++) {
        if ((i & 255) == 0 && (t = now()) >= end)
            break;
        if (send(fd, payload, size, 0) < 0)
            errors++;
        else
            sent++;
    }
    t = now();
    printf("sent=%llu errors=%llu seconds=%.6f\n", sent, errors, t - start);
    return 0;
}

static int tcp_send(char **argv) {
    struct sockaddr_in dst = address(argv[0], argv[1]);
    double seconds = atof(argv[2]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("tcp connect");
        return 1;
    }
    static char chunk[128 * 1024];
    unsigned long long bytes = 0;
    double start = now(), end = start + seconds;
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (now() < end) {
        ssize_t n = send(fd, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            perror("send");
            break;
        }
        bytes += (unsigned long long)n;
    }
    double t = now();
    close(fd);
    printf("bytes=%llu seconds=%.6f\n", bytes, t - start);
    return 0;
}

static int listener(const char *ip, const char *port) {
    struct sockaddr_in sin = address(ip, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 1024) < 0) {
        perror("listen");
        exit(1);
    }
    printf("ready\n");
    fflush(stdout);
    return fd;
}

static int wait_readable(int fd, double end) {
    double left = end - now();
    if (left <= 0)
        return 0;
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, (int)(left * 1000) + 1) > 0;
}

static int tcp_sink(char **argv) {
    double end = now() + atof(argv[2]);
    int lfd = listener(argv[0], argv[1]);
    if (!wait_readable(lfd, end)) {
        printf("bytes=0 seconds=0\n");
        return 1;
    }
    int fd = accept(lfd, NULL, NULL);
    static char buf[256 * 1024];
    unsigned long long bytes = 0;
    double start = now(), t = start;
    while (wait_readable(fd, end)) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        bytes += (unsigned long long)n;
        t = now();
    }
    printf("bytes=%llu seconds=%.6f\n", bytes, t - start);
    return 0;
}

static int tcp_listen(char **argv) {
    double end = now() + atof(argv[2]);
    int lfd = listener(argv[0], argv[1]);
    unsigned long long accepted = 0;
    while (wait_readable(lfd, end)) {
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0) {
            close(fd);
            accepted++;
        }
    }
    printf("accepted=%llu\n", accepted);
    return 0;
}

static int tcp_connects(char **argv) {
    struct sockaddr_in dst = address(argv[0], argv[1]);
    unsigned long count = strtoul(argv[2], NULL, 10);
    double end = now() + atof(argv[3]);
    unsigned long done = 0, failures = 0;
    struct linger lg = {1, 0};
    for (unsigned long i = 0; i < count && now() < end; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        double t0 = now();
        int rc = connect(fd, (struct sockaddr *)&dst, sizeof dst);
        int ok = rc == 0;
        if (rc < 0 && errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int err = 0;
            socklen_t len = sizeof err;
            if (poll(&p, 1, 1000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
                ok = err == 0;
        }
        double t1 = now();
        if (ok) {
            printf("us=%.1f\n", (t1 - t0) * 1e6);
            done++;
        } else {
            failures++;
        }
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    printf("connects=%lu failures=%lu\n", done, failures);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 7 && strcmp(argv[1], "udp") == 0)
        return udp_send(argv + 2);
    if (argc >= 5 && strcmp(argv[1], "tcp-send") == 0)
        return tcp_send(argv + 2);
    if (argc >= 5 && strcmp(argv[1], "tcp-sink") == 0)
        return tcp_sink(argv + 2);
    if (argc >= 5 && strcmp(argv[1], "tcp-listen") == 0)
        return tcp_listen(argv + 2);
    if (argc >= 6 && strcmp(argv[1], "connect") == 0)
        return tcp_connects(argv + 2);
    fprintf(stderr, "usage: traffic udp DST PORT SIZE COUNT SECONDS | tcp-send DST PORT SECONDS |\n"
                    "       tcp-sink ADDR PORT SECONDS | tcp-listen ADDR PORT SECONDS |\n"
                    "       connect DST PORT COUNT SECONDS\n");
    return 2;
}

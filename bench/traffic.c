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
 *                                                "connects=N failures=F seconds=T"
 *   traffic flows KIND SRC DST DSTS PORT PORTS SPORT SPORTS REPEAT COUNT SECONDS
 *                                                COUNT raw IPv4 packets from SRC, REPEAT per flow:
 *                                                flow f goes to address DST + k % DSTS, port
 *                                                PORT + k / DSTS % PORTS (k = f % (DSTS * PORTS)),
 *                                                from port SPORT + f / (DSTS * PORTS) % SPORTS;
 *                                                KIND udp (16-byte payload, no checksum), syn (a
 *                                                TCP SYN) or mix (each pass over the
 *                                                destinations alternates them); root only;
 *                                                "sent=N errors=E seconds=T"
 */
#include <arpa/inet.h>
#include <stdint.h>
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
    double start = now(), end = start + atof(argv[3]);
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
    printf("connects=%lu failures=%lu seconds=%.6f\n", done, failures, now() - start);
    return 0;
}

/* The ones' complement sum of len bytes (even), folded; the start of a checksum. */
static uint32_t sum16(const void *data, size_t len, uint32_t sum) {
    const uint16_t *word = data;
    for (; len > 1; len -= 2)
        sum += *word++;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

static int raw_flows(char **argv) {
    const char *kind = argv[0];
    int udp_only = strcmp(kind, "udp") == 0, syn_only = strcmp(kind, "syn") == 0;
    if (!udp_only && !syn_only && strcmp(kind, "mix") != 0) {
        fprintf(stderr, "flows: KIND must be udp, syn or mix, not %s\n", kind);
        return 2;
    }
    struct sockaddr_in src = address(argv[1], "0"), dst = address(argv[2], "0");
    unsigned long dsts = strtoul(argv[3], NULL, 10), port = strtoul(argv[4], NULL, 10);
    unsigned long ports = strtoul(argv[5], NULL, 10), sport = strtoul(argv[6], NULL, 10);
    unsigned long sports = strtoul(argv[7], NULL, 10), repeat = strtoul(argv[8], NULL, 10);
    unsigned long long count = strtoull(argv[9], NULL, 10);
    double seconds = atof(argv[10]);
    if (!dsts || !ports || !sports || !repeat || port + ports > 65536 || sport + sports > 65536) {
        fprintf(stderr, "flows: DSTS, PORTS, SPORTS and REPEAT must be positive, ports < 65536\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) {
        perror("raw socket");
        return 1;
    }
    uint32_t first = ntohl(dst.sin_addr.s_addr);
    unsigned long pairs = dsts * ports;
    /* IPv4 header (20 bytes; the kernel fills in its checksum and id), then TCP (20) or UDP (8
     * + 16 of payload); the TCP checksum covers a pseudo header. */
    unsigned char packet[44];
    unsigned long long sent = 0, errors = 0, i;
    double start = now(), end = start + seconds;
    for (i = 0; i < count; i++) {
        if ((i & 255) == 0 && now() >= end)
            break;
        unsigned long long flow = i / repeat;
        unsigned long k = (unsigned long)(flow % pairs);
        unsigned long pass = (unsigned long)(flow / pairs);
        int syn = syn_only || (!udp_only && (flow + pass) % 2);
        uint32_t daddr = htonl(first + (uint32_t)(k % dsts));
        uint16_t dport = htons((uint16_t)(port + k / dsts % ports));
        uint16_t source = htons((uint16_t)(sport + pass % sports));
        size_t size = 40;
        memset(packet, 0, sizeof packet);
        packet[0] = 0x45;
        packet[8] = 64;
        packet[9] = syn ? IPPROTO_TCP : IPPROTO_UDP;
        memcpy(packet + 12, &src.sin_addr.s_addr, 4);
        memcpy(packet + 16, &daddr, 4);
        memcpy(packet + 20, &source, 2);
        memcpy(packet + 22, &dport, 2);
        if (syn) {
            uint32_t seq = htonl((uint32_t)i);
            uint16_t window = htons(64240), tcp_len = htons(20), proto = htons(IPPROTO_TCP);
            memcpy(packet + 24, &seq, 4);
            packet[32] = 5 << 4;
            packet[33] = 0x02;
            memcpy(packet + 34, &window, 2);
            uint32_t sum = sum16(packet + 12, 8, 0);
            sum = sum16(&proto, 2, sum);
            sum = sum16(&tcp_len, 2, sum);
            uint16_t check = (uint16_t)~sum16(packet + 20, 20, sum);
            memcpy(packet + 36, &check, 2);
        } else {
            uint16_t udp_len = htons(24);
            memcpy(packet + 24, &udp_len, 2);
            size = 44;
        }
        uint16_t total = htons((uint16_t)size);
        memcpy(packet + 2, &total, 2);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = daddr};
        if (sendto(fd, packet, size, 0, (struct sockaddr *)&to, sizeof to) < 0)
            errors++;
        else
            sent++;
    }
    printf("sent=%llu errors=%llu seconds=%.6f\n", sent, errors, now() - start);
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
    if (argc >= 13 && strcmp(argv[1], "flows") == 0)
        return raw_flows(argv + 2);
    fprintf(stderr, "usage: traffic udp DST PORT SIZE COUNT SECONDS | tcp-send DST PORT SECONDS |\n"
                    "       tcp-sink ADDR PORT SECONDS | tcp-listen ADDR PORT SECONDS |\n"
                    "       connect DST PORT COUNT SECONDS |\n"
                    "       flows udp|syn|mix SRC DST DSTS PORT PORTS SPORT SPORTS REPEAT COUNT "
                    "SECONDS\n");
    return 2;
}

/* nfq_accept: the smallest useful NFQUEUE reader, the yardstick for p2pwall's throughput.
 *
 * Binds one queue with the same settings p2pwall uses (copy the whole packet, queue length 4096,
 * a 4 MiB netlink receive buffer), gives every packet NF_ACCEPT, and exits on SIGTERM/SIGINT or
 * after --seconds (default 60) so it can never outlive a benchmark.
 *
 *   nfq_accept QUEUE [MAX_SECONDS]
 *
 * Prints "ready" once bound, and "verdicts=N enobufs=E" when it exits.
 * Build: gcc -O2 -o nfq_accept nfq_accept.c -lnetfilter_queue -lnfnetlink
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAXLEN 4096
#define RCVBUF (4 * 1024 * 1024)
#define COPY_RANGE 0xffff

static volatile sig_atomic_t stop;
static unsigned long long verdicts;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data) {
    (void)msg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (ph == NULL)
        return 0;
    verdicts++;
    return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s QUEUE [MAX_SECONDS]\n", argv[0]);
        return 2;
    }
    int queue = atoi(argv[1]);
    double limit = argc > 2 ? atof(argv[2]) : 60.0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct nfq_handle *h = nfq_open();
    if (h == NULL) {
        perror("nfq_open");
        return 1;
    }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, on_packet, NULL);
    if (qh == NULL) {
        perror("nfq_create_queue");
        return 1;
    }
    if (nfq_set_mode(qh, NFQNL_COPY_PACKET, COPY_RANGE) < 0) {
        perror("nfq_set_mode");
        return 1;
    }
    if (nfq_set_queue_maxlen(qh, QUEUE_MAXLEN) < 0)
        perror("nfq_set_queue_maxlen (continuing)");
    nfnl_rcvbufsiz(nfq_nfnlh(h), RCVBUF);
    int fd = nfq_fd(h);
    /* Wake up at least every 200 ms so the time limit and signals are honoured. */
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    printf("ready queue=%d\n", queue);
    fflush(stdout);
    double deadline = now() + limit;
    unsigned long long enobufs = 0;
    static char buf[65536 + 4096] __attribute__((aligned));
    while (!stop && now() < deadline) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n >= 0) {
            nfq_handle_packet(h, buf, (int)n);
            continue;
        }
        if (errno == ENOBUFS) {
            enobufs++; /* the kernel lost packets; keep going, as the daemon does */
            continue;
        }
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
        perror("recv");
        break;
    }
    nfq_destroy_queue(qh);
    nfq_close(h);
    printf("verdicts=%llu enobufs=%llu\n", verdicts, enobufs);
    return 0;
}

/*
 * Closing a socket after a failed handshake without losing the alert.
 *
 * When a handshake fails, OpenSSL has written an alert, but the client may already have
 * sent its next records (TLS 1.2: Certificate, ClientKeyExchange, Finished in one flight).
 * close() on a socket with unread input makes the kernel send RST instead of FIN, and a
 * RST that reaches the client before it reads the alert discards it: the client reports
 * "connection reset" instead of the reason.  So, as `openssl s_server` does in effect:
 * shut down the sending side (the alert then FIN go out), read and drop what the peer
 * still sends until it closes or LINGER_MS pass, then close.
 *
 * One background thread does the waiting for every listener, so a handshake worker never
 * blocks: it hands the descriptor over and goes on.  At most MAX_LINGER sockets wait at
 * once; beyond that a socket is drained once and closed at once.  The thread is started
 * on first use and then sleeps in poll() on a wake-up pipe while nothing waits.
 */
#include "ss_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

/* Long enough for a client on a far network to read the alert and close; short enough
 * that a silent client does not hold a descriptor for long. */
#define LINGER_MS 2000
/* Descriptors waiting at once: a flood of failing handshakes costs no more than this. */
#define MAX_LINGER 256

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int wake[2] = {-1, -1};
static int started;
static struct {
    int fd;
    long long deadline;
} waiting[MAX_LINGER];
static int nwaiting;

/* Read what is there; 1 when the peer has closed (or the socket failed), 0 otherwise. */
static int drain(int fd)
{
    char buf[4096];
    for (int i = 0; i < 64; i++) { /* at most 256 KiB per turn: a flood cannot pin us */
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
    return 0;
}

static void *linger_thread(void *arg)
{
    struct pollfd p[MAX_LINGER + 1];
    for (;;) {
        pthread_mutex_lock(&lock);
        long long now = ss_now_ms(), next = -1;
        int n = 0;
        for (int i = 0; i < nwaiting;) {
            if (now >= waiting[i].deadline) {
                close(waiting[i].fd);
                waiting[i] = waiting[--nwaiting];
                continue;
            }
            if (next < 0 || waiting[i].deadline < next)
                next = waiting[i].deadline;
            p[n].fd = waiting[i].fd;
            p[n].events = POLLIN;
            p[n].revents = 0;
            n++;
            i++;
        }
        pthread_mutex_unlock(&lock);
        p[n].fd = wake[0];
        p[n].events = POLLIN;
        p[n].revents = 0;
        int r = poll(p, (nfds_t)n + 1, next < 0 ? -1 : (int)(next - now));
        if (r <= 0)
            continue;
        if (p[n].revents) {
            char b[64];
            while (read(wake[0], b, sizeof b) > 0)
                ;
        }
        pthread_mutex_lock(&lock);
        for (int k = 0; k < n; k++) {
            if (!p[k].revents || !drain(p[k].fd))
                continue;
            for (int i = 0; i < nwaiting; i++)
                if (waiting[i].fd == p[k].fd) {
                    close(waiting[i].fd);
                    waiting[i] = waiting[--nwaiting];
                    break;
                }
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void start(void)
{
    pthread_t t;
    pthread_attr_t attr;
    if (pipe2(wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    started = pthread_create(&t, &attr, linger_thread, NULL) == 0;
    pthread_attr_destroy(&attr);
}

void ss_close_after_alert(int fd)
{
    shutdown(fd, SHUT_WR); /* what was written (the alert) goes out, then FIN */
    if (drain(fd)) {
        close(fd);
        return;
    }
    pthread_once(&once, start);
    pthread_mutex_lock(&lock);
    if (!started || nwaiting >= MAX_LINGER) {
        pthread_mutex_unlock(&lock);
        close(fd);
        return;
    }
    waiting[nwaiting].fd = fd;
    waiting[nwaiting].deadline = ss_now_ms() + LINGER_MS;
    nwaiting++;
    pthread_mutex_unlock(&lock);
    ssize_t w = write(wake[1], "", 1);
    (void)w;
}

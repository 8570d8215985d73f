/*
 * The channel engine: one consumer serves many established connections.
 *
 * Theory of operation
 *  - A hub owns an epoll set holding its channels (level-triggered, EPOLLIN), its
 *    listener's ready eventfd and stop eventfd (when it has a listener), and a wake eventfd
 *    of its own.  Channels are named by an id: a slot in the hub's table plus the slot's
 *    generation, so an event about a channel removed meanwhile is recognised and ignored.
 *  - ss_hub_poll runs on the consumer's thread with the GIL released: epoll_wait, then for
 *    each readable channel one pass of "read everything there is, then deframe every whole
 *    message".  Reading goes into one scratch buffer per hub.  Every message of a batch
 *    lies in memory the hub owns until its next poll: the scratch buffer, where most are
 *    read, or (a message assembled in its channel's buffers over several passes) a copy in
 *    what is left of the scratch buffer or in a block of its own.  So no reader, writer or
 *    close of a channel can overwrite a batch the consumer is still copying.  What is left
 *    of an incomplete frame is copied into the channel's own buffer before the pass gives
 *    the channel's read lock back.
 *
 *  Ownership of a channel (an ss_conn), and who may do what:
 *
 *    state                  | reads              | writes             | close / free
 *    -----------------------+--------------------+--------------------+--------------------
 *    own (no hub)           | its owner, directly| its owner          | its owner
 *    served (c->hub set)    | the hub's passes   | any thread: queued | its owner: leave
 *                           | only; a direct     | (ss_conn_queue_    | the hub first
 *                           | read is refused    | write), sent by the| (ss_hub_remove), or
 *                           | (SS_E_INVALID)     | writer or the hub  | free (which leaves)
 *    ended (HUB_ENDED)      | nobody until it    | as served          | as served
 *                           | leaves the hub     |                    |
 *
 *    Transitions: own -> served by ss_hub_add or a hub's accept; served -> ended when a
 *    pass sees the stream end (reported once, ENDED); served or ended -> own by
 *    ss_hub_remove (the consumer, on ENDED or to discard it), by ss_conn_free, or by
 *    ss_hub_free for every channel left.  c->hub changes only under the hub's lock and the
 *    attach lock's order (below); a pass holds the channel's read lock from before it
 *    points c->in into the scratch buffer until after it points it back.
 *  - New connections from the listener's ready queue are added and reported (ACCEPTED),
 *    then read at once: their first message may be buffered in OpenSSL already.
 *  - A channel whose pass stopped early (the batch or the scratch buffer was full, or a
 *    message assembled in the channel's buffer was handed out) goes on the revisit list,
 *    served first by the next poll, which then does not wait.  The wake eventfd is
 *    signalled while that list is not empty, so ss_hub_fd tells an event loop the truth.
 *  - Writes the socket did not take are queued on the channel and sent by the hub's polls
 *    (EPOLLOUT while HUB_WRITING).  A consumer that waits for the queue to drain asks once
 *    (ss_hub_want_drain: HUB_DRAIN, at most hub_below bytes left); the flush that gets it
 *    there reports SS_EV_WRITABLE in the same batch as messages (or, with no room, from the
 *    revisit list).  Channels that did not ask cost nothing more.
 *  - A channel that ends (peer closed, reset, TLS or framing error) is reported once
 *    (ENDED) and leaves the epoll set; it keeps its slot until ss_hub_remove.
 *  - Locking: the hub lock is held while channels are served and while they are added or
 *    removed, never during epoll_wait.  A channel's read lock is only tried (its owner may
 *    hold it for a moment while handing it over).  A writer reaches the hub through the
 *    channel under the attach lock, which ss_hub_free takes too, so a hub is never locked
 *    after it is gone.  Lock order: (write lock,) attach, hub, the connection's read lock,
 *    its ssl lock.
 *  - Why each loop ends: poll on events, its deadline, or shutdown; a channel's pass when
 *    its reads would block, its share of the scratch buffer is used, or the batch is full.
 */

#include "ss_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* 1 MiB of scratch per hub: a batch of 16 channels each bringing a 64 KiB share fits.
 * (Both sizes can be set at build time: the fuzz build, fuzz/c/run.sh, makes them small so
 * that a few channels with a few KiB each reach the ends of the scratch buffer.) */
#ifndef SS_HUB_SCRATCH
#define SS_HUB_SCRATCH (1u << 20)
#endif
#define SCRATCH SS_HUB_SCRATCH
/* What one channel may bring in one pass: fair to the others, and large enough that a
 * bulk stream costs one pass per 64 KiB (four full TLS records).  At least SS_RECORD. */
#ifndef SS_HUB_SHARE
#define SS_HUB_SHARE (64u << 10)
#endif
#define SHARE SS_HUB_SHARE
#define MAX_EPOLL 256

/* epoll data tags below the channel ids (ids are slot + 1 + generation << 32) */
#define TAG_WAKE 0
#define TAG_READY 1 /* the listener has connections to accept */

#define HUB_REVISIT 1 /* on the revisit list */
#define HUB_ENDED 2   /* reported as ended, out of the epoll set */
#define HUB_DEFAULTS 4 /* accepted here: takes the hub's mode on its first pass */
#define HUB_WRITING 8  /* watched for room to send its queue (EPOLLOUT) */
#define HUB_OUT 16     /* its reads wait on a write OpenSSL must do: EPOLLOUT, not EPOLLIN */
#define HUB_PAUSED 32  /* ss_hub_pause: not read until resumed (not watched for EPOLLIN) */
#define HUB_DRAIN 64   /* ss_hub_want_drain: report when at most hub_below bytes are queued */
#define HUB_DRAINED 128 /* ... which holds now: SS_EV_WRITABLE to report (batch had no room) */

struct ss_hub {
    pthread_mutex_t lock;
    int epfd;
    int wake_fd;
    atomic_int stopping;
    atomic_int interrupted; /* ss_hub_interrupt: the poll in progress returns now */
    int no_accept; /* ss_hub_stop_accepting: the listener is no longer watched */
    ss_listener *listener;
    int stop_fd; /* the listener's, -1 without one */
    int mode;
    char tag[SS_MAX_END_TAG];
    size_t tag_len;
    size_t max_message;
    size_t max_bytes;
    size_t high_water; /* 0: the connections keep theirs */
    ss_conn **slots;
    uint32_t *gens;
    int nslots, free_head; /* free slots are chained through gens' high bit-free twin */
    int *next_free;
    ss_conn *revisit;
    char *scratch;
    size_t used; /* scratch bytes handed out in this poll */
    char **spill; /* messages too large for the scratch left, copied out (this poll's) */
    int nspill, spill_cap;
    uint64_t polls; /* polls begun (ss_conn.hub_poll: which served a channel last) */
};

static uint64_t id_of(ss_hub *h, int slot) { return ((uint64_t)h->gens[slot] << 32) | (uint64_t)(slot + 2); }

static ss_conn *conn_of(ss_hub *h, uint64_t id)
{
    int slot = (int)(id & 0xffffffffu) - 2;
    if (slot < 0 || slot >= h->nslots || h->gens[slot] != (uint32_t)(id >> 32))
        return NULL;
    return h->slots[slot];
}

/* Watch c for what it waits on: EPOLLIN unless its reads wait on a write (HUB_OUT),
 * EPOLLOUT while it has a queue to send or such a write to make.  Hub lock held. */
static int rearm(ss_hub *h, ss_conn *c)
{
    uint32_t events = (c->hub_flags & (HUB_OUT | HUB_PAUSED) ? 0 : EPOLLIN) |
                      (c->hub_flags & (HUB_WRITING | HUB_OUT) ? EPOLLOUT : 0);
    struct epoll_event ev = {.events = events, .data.u64 = id_of(h, c->hub_slot)};
    return epoll_ctl(h->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void signal_fd(int fd)
{
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w;
}

static void drain_fd(int fd)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

/* Who may lock a channel's hub through the channel (c->hub): a writer wanting EPOLLOUT and
 * ss_conn_free leaving its hub do, while the hub itself may be being freed.  This lock is
 * held from reading c->hub until the hub's lock is taken, and by ss_hub_free while it
 * detaches its channels, so neither can lock a hub that is gone.  Order: attach, hub. */
static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;

/* The hub of c, locked, or NULL. */
static ss_hub *lock_hub_of(ss_conn *c)
{
    pthread_mutex_lock(&attach_lock);
    ss_hub *h = __atomic_load_n(&c->hub, __ATOMIC_ACQUIRE);
    if (h)
        pthread_mutex_lock(&h->lock);
    pthread_mutex_unlock(&attach_lock);
    return h;
}

/* Forget the messages copied out for the previous batch (hub lock held). */
static void drop_spill(ss_hub *h)
{
    for (int i = 0; i < h->nspill; i++)
        free(h->spill[i]);
    h->nspill = 0;
}

/* A message of the batch must not point into its channel's buffers: the channel's own
 * reader (once it leaves the hub), its close or its next pass would overwrite them while
 * the consumer copies the batch.  Such a message is copied into the scratch buffer (or a
 * block of its own) that only the hub reuses, at the next poll.  NULL: out of memory. */
static const char *hub_owned(ss_hub *h, const char *p, size_t len)
{
    if (len == 0 || (p >= h->scratch && p < h->scratch + SCRATCH))
        return p;
    char *d;
    if (len <= SCRATCH - h->used) {
        d = h->scratch + h->used;
        h->used += len;
    } else {
        if (h->nspill == h->spill_cap) {
            int cap = h->spill_cap ? h->spill_cap * 2 : 8;
            char **s = realloc(h->spill, (size_t)cap * sizeof *s);
            if (!s)
                return NULL;
            h->spill = s;
            h->spill_cap = cap;
        }
        if (!(d = malloc(len)))
            return NULL;
        h->spill[h->nspill++] = d;
    }
    memcpy(d, p, len);
    return d;
}

int ss_hub_new(ss_listener *listener, int mode, const char *tag, size_t tag_len,
               size_t max_message, size_t max_bytes, ss_hub **out, ss_err *err)
{
    *out = NULL;
    if (mode < SS_MODE_END_TAG || mode > SS_MODE_NO_END_TAG)
        return ss_fail(err, SS_E_INVALID, "unknown transmission mode %d", mode);
    if (tag_len > SS_MAX_END_TAG)
        return ss_fail(err, SS_E_INVALID, "the end tag must be 1 to %d bytes long",
                       SS_MAX_END_TAG);
    ss_hub *h = calloc(1, sizeof *h);
    if (!h || !(h->scratch = malloc(SCRATCH))) {
        free(h);
        return ss_fail(err, SS_E_NOMEM, "out of memory creating a channel engine");
    }
    pthread_mutex_init(&h->lock, NULL);
    h->stop_fd = -1;
    h->free_head = -1;
    h->mode = mode;
    memcpy(h->tag, tag, tag_len);
    h->tag_len = tag_len;
    h->max_message = max_message;
    h->max_bytes = max_bytes ? max_bytes : SHARE;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event wev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (h->epfd < 0 || h->wake_fd < 0 ||
        epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->wake_fd, &wev) != 0) {
        int rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "cannot set up the channel engine");
        ss_hub_free(h);
        return rc;
    }
    if (listener) {
        h->listener = listener;
        struct epoll_event rev = {.events = EPOLLIN, .data.u64 = TAG_READY};
        if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, ss_listener_ready_fd(listener), &rev) != 0) {
            int rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "cannot watch the listener");
            ss_hub_free(h);
            return rc;
        }
    }
    *out = h;
    return SS_OK;
}

int ss_hub_fd(ss_hub *h) { return h->epfd; }

void ss_hub_set_high_water(ss_hub *h, size_t bytes)
{
    pthread_mutex_lock(&h->lock);
    h->high_water = bytes;
    pthread_mutex_unlock(&h->lock);
}

static int grow(ss_hub *h)
{
    int cap = h->nslots ? h->nslots * 2 : 64;
    ss_conn **s = realloc(h->slots, (size_t)cap * sizeof *s);
    if (!s)
        return -1;
    h->slots = s;
    uint32_t *g = realloc(h->gens, (size_t)cap * sizeof *g);
    if (!g)
        return -1;
    h->gens = g;
    int *nf = realloc(h->next_free, (size_t)cap * sizeof *nf);
    if (!nf)
        return -1;
    h->next_free = nf;
    for (int i = cap - 1; i >= h->nslots; i--) {
        h->slots[i] = NULL;
        h->gens[i] = 0;
        h->next_free[i] = h->free_head;
        h->free_head = i;
    }
    h->nslots = cap;
    return 0;
}

/* Hub lock held. */
static int add_locked(ss_hub *h, ss_conn *c, int flags, uint64_t *id, ss_err *err)
{
    if (c->hub)
        return ss_fail(err, SS_E_INVALID, "the connection is already served by a channel engine");
    if (h->free_head < 0 && grow(h) != 0)
        return ss_fail(err, SS_E_NOMEM, "out of memory adding a channel");
    int slot = h->free_head;
    h->free_head = h->next_free[slot];
    h->gens[slot]++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = id_of(h, slot)};
    if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        int rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "cannot watch the connection");
        h->next_free[slot] = h->free_head;
        h->free_head = slot;
        return rc;
    }
    h->slots[slot] = c;
    if (h->high_water) /* a plain store: its write lock would invert the lock order */
        c->high_water = h->high_water;
    __atomic_store_n(&c->hub, h, __ATOMIC_RELEASE);
    c->hub_slot = slot;
    c->hub_flags = flags;
    c->hub_next = NULL;
    *id = id_of(h, slot);
    return SS_OK;
}

int ss_hub_add(ss_hub *h, ss_conn *c, uint64_t *id, ss_err *err)
{
    pthread_mutex_lock(&h->lock);
    int rc = add_locked(h, c, 0, id, err);
    pthread_mutex_unlock(&h->lock);
    if (rc == SS_OK && c->ssl) {
        /* bytes OpenSSL read ahead before the hub watched the socket: serve them first */
        pthread_mutex_lock(&c->ssl_lock);
        int pending = SSL_has_pending(c->ssl);
        pthread_mutex_unlock(&c->ssl_lock);
        if (pending) {
            pthread_mutex_lock(&h->lock);
            if (c->hub == h && !(c->hub_flags & HUB_REVISIT)) {
                c->hub_flags |= HUB_REVISIT;
                c->hub_next = h->revisit;
                h->revisit = c;
            }
            pthread_mutex_unlock(&h->lock);
            signal_fd(h->wake_fd);
        }
    }
    return rc;
}

/* Hub lock held. */
static void remove_locked(ss_hub *h, ss_conn *c)
{
    if (c->hub != h)
        return;
    if (!(c->hub_flags & HUB_ENDED))
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->hub_flags & HUB_REVISIT) {
        for (ss_conn **p = &h->revisit; *p; p = &(*p)->hub_next)
            if (*p == c) {
                *p = c->hub_next;
                break;
            }
    }
    free(c->hub_end); /* an end not reported yet: the channel leaves before it */
    c->hub_end = NULL;
    int slot = c->hub_slot;
    h->slots[slot] = NULL;
    h->gens[slot]++;
    h->next_free[slot] = h->free_head;
    h->free_head = slot;
    __atomic_store_n(&c->hub, NULL, __ATOMIC_RELEASE);
    c->hub_slot = -1;
    c->hub_flags = 0;
    c->hub_next = NULL;
}

void ss_hub_remove(ss_hub *h, ss_conn *c)
{
    pthread_mutex_lock(&h->lock);
    remove_locked(h, c);
    pthread_mutex_unlock(&h->lock);
}

void ss_hub_detach(ss_conn *c)
{
    /* ss_conn_free of a connection still in a hub (no other call uses c now: its hub link
     * can only be cut by the hub's own free, which the attach lock orders with us). */
    ss_hub *h = lock_hub_of(c);
    if (h) {
        remove_locked(h, c);
        pthread_mutex_unlock(&h->lock);
    }
}

void ss_hub_want_write(ss_conn *c)
{
    /* Called by a writer holding c's write lock; the hub's poll only tries that lock, so
     * taking the hub lock here cannot deadlock. */
    ss_hub *h = lock_hub_of(c);
    if (!h)
        return;
    if (c->hub == h && !(c->hub_flags & (HUB_ENDED | HUB_WRITING))) {
        c->hub_flags |= HUB_WRITING;
        if (rearm(h, c) != 0)
            c->hub_flags &= ~HUB_WRITING;
    }
    pthread_mutex_unlock(&h->lock);
}

/* The socket has room: send what c has queued; stop watching for room once it is all out.
 * A consumer waiting for the queue to drain (HUB_DRAIN) is to be told once it has.
 * Hub lock held. */
static void flush(ss_hub *h, ss_conn *c)
{
    ss_err err;
    size_t left;
    int rc = ss_conn_flush(c, &left, &err);
    if (c->hub_flags & HUB_DRAIN && (rc != SS_E_AGAIN || left <= c->hub_below)) {
        c->hub_flags &= ~HUB_DRAIN;
        c->hub_flags |= HUB_DRAINED;
    }
    if (rc == SS_E_AGAIN)
        return; /* more later (or a writer is at it: it sends, or re-arms) */
    int was = c->hub_flags & HUB_WRITING;
    c->hub_flags &= ~HUB_WRITING;
    if (was && !(c->hub_flags & HUB_ENDED))
        rearm(h, c);
    /* an error broke the connection: the next pass over it reports the end */
}

static void revisit_later(ss_hub *h, ss_conn *c)
{
    if (!(c->hub_flags & HUB_REVISIT)) {
        c->hub_flags |= HUB_REVISIT;
        c->hub_next = h->revisit;
        h->revisit = c;
    }
}

/* Report that c's queue drained (HUB_DRAINED) if the batch has room for it and one more
 * event (the caller may serve c next), else on the next poll. */
static void report_drained(ss_hub *h, ss_conn *c, ss_event *ev, int *n, int max)
{
    if (c->hub_flags & HUB_ENDED) { /* its end is reported instead */
        c->hub_flags &= ~HUB_DRAINED;
        return;
    }
    if (max - *n < 2) {
        revisit_later(h, c);
        return;
    }
    c->hub_flags &= ~HUB_DRAINED;
    ss_event *e = &ev[(*n)++];
    memset(e, 0, sizeof *e);
    e->kind = SS_EV_WRITABLE;
    e->id = id_of(h, c->hub_slot);
}

static void ended(ss_hub *h, ss_conn *c, int code, ss_event *ev, int *n)
{
    c->hub_flags |= HUB_ENDED;
    c->hub_flags &= ~(HUB_DRAIN | HUB_DRAINED);
    epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    ss_event *e = &ev[(*n)++];
    memset(e, 0, sizeof *e);
    e->kind = SS_EV_ENDED;
    e->code = code;
    e->id = id_of(h, c->hub_slot);
}

/* Where this pass's bytes go (read lock held): the scratch buffer when nothing of c is
 * pending (the usual case: an idle channel holds no input buffer), else c's own buffer,
 * behind the partial frame, grown as every read grows it.  1: the scratch buffer; 0: c's
 * buffer; -1: out of memory (recorded in err). */
static int place_input(ss_hub *h, ss_conn *c, ss_err *err)
{
    if (c->in.len == 0 && SCRATCH - h->used >= SS_RECORD) {
        free(c->in.data);
        size_t room = SCRATCH - h->used < SHARE ? SCRATCH - h->used : SHARE;
        c->in = (ss_buf){.data = h->scratch + h->used, .cap = room};
        return 1;
    }
    if (ss_buf_reserve(&c->in, SS_RECORD) != 0)
        return ss_fail(err, SS_E_NOMEM, "out of memory buffering a message"), -1;
    return 0;
}

/* After a pass that read into the scratch buffer (read lock still held, so that no reader
 * of c ever sees its input pointing into memory the hub gives to other channels): what is
 * left of a partial frame moves to a buffer of c's own. */
static void leave_scratch(ss_conn *c)
{
    ss_buf *b = &c->in;
    if ((c->hub_flags & HUB_ENDED) || b->len == 0) {
        *b = (ss_buf){0};
        return;
    }
    size_t cap = b->len > SS_RECORD ? b->len : SS_RECORD;
    char *d = malloc(cap);
    if (d)
        memcpy(d, b->data + b->off, b->len);
    /* (out of memory: the partial frame is lost, and the connection breaks on its next
     * bytes as a malformed frame rather than reading freed memory) */
    *b = d ? (ss_buf){.data = d, .len = b->len, .cap = cap} : (ss_buf){0};
}

/* Hand out every whole message c has buffered, while the batch has room.  Returns 1 when
 * the pass stopped early (batch full, or a message assembled in c's message buffer),
 * a negative code when the connection broke (not reported yet), else 0. */
static int hand_out(ss_hub *h, ss_conn *c, ss_event *ev, int *n, int max, ss_err *err)
{
    while (*n < max) {
        const char *p;
        size_t len;
        int rc = ss_conn_take(c, h->max_bytes, &p, &len, err);
        if (rc == SS_E_AGAIN)
            return 0;
        if (rc != SS_OK)
            return rc;
        int assembled = p == c->msg.data && len;
        const char *own = hub_owned(h, p, len);
        if (!own)
            return ss_conn_end(c, ss_fail(err, SS_E_NOMEM, "out of memory handing out a "
                                          "%zu-byte message", len), err);
        ss_event *e = &ev[(*n)++];
        *e = (ss_event){.kind = SS_EV_MESSAGE, .id = id_of(h, c->hub_slot), .data = own,
                        .len = len};
        c->hub_poll = h->polls;
        if (assembled)
            return 1; /* the message buffer's next message waits for the next pass */
    }
    return 1;
}

/* The read of one pass and what it brought (read lock held): messages, then the end of
 * the stream once every message before it is out. */
static void read_and_hand_out(ss_hub *h, ss_conn *c, int in_scratch, ss_event *ev, int *n,
                              int max)
{
    ss_err err;
    int more = 0, end = c->hub_end ? c->hub_end->code : 0, write_first = 0;
    ss_buf *b = &c->in;
    if (end) { /* the stream ended in an earlier pass: what it said then, not a new read
                * (a reset is reported once: read again, it would look like a clean EOF) */
        err = *c->hub_end;
    } else {
        long got = ss_conn_read_nowait(c, b->data + b->off + b->len,
                                       b->cap - b->off - b->len, &more, &end, &write_first,
                                       &err);
        b->len += (size_t)got;
        if (in_scratch) { /* what was read is this batch's; the rest of the scratch is free */
            h->used += (size_t)got;
            b->cap = b->off + b->len;
        }
    }
    int stopped = hand_out(h, c, ev, n, max, &err);
    if (stopped < 0) {
        ended(h, c, stopped, ev, n);
        return;
    }
    if (end && !stopped) {
        free(c->hub_end);
        c->hub_end = NULL;
        ended(h, c, ss_conn_end(c, end, &err), ev, n);
        return;
    }
    if (end && !c->hub_end && (c->hub_end = malloc(sizeof *c->hub_end)))
        *c->hub_end = err; /* the end waits behind the messages (out of memory: read again) */
    if (write_first) {
        /* OpenSSL must send before it reads on (the answer to a KeyUpdate) and the peer is
         * not reading: wait until the socket is writable.  Still watched for EPOLLIN, its
         * unread bytes would wake the hub at once, again and again (level-triggered). */
        c->hub_flags |= HUB_OUT;
        if (rearm(h, c) != 0)
            c->hub_flags &= ~HUB_OUT;
    }
    if (stopped || more || end)
        revisit_later(h, c);
}

/* One pass over channel c: read what is there, hand out every whole message.  Room for at
 * least one event is guaranteed by the caller.  Hub lock held; c's read lock is taken for
 * the whole pass, and given back only once c's input no longer points into the scratch
 * buffer. */
static void serve(ss_hub *h, ss_conn *c, ss_event *ev, int *n, int max)
{
    if (c->hub_flags & HUB_ENDED)
        return;
    if (c->hub_poll == h->polls) {
        /* It was served in this poll already: it waits for the next poll, which serves it
         * first (the poll has events then, so it does not wait: no busy loop on a readable
         * socket), so one channel cannot take a whole batch. */
        revisit_later(h, c);
        return;
    }
    if (pthread_mutex_trylock(&c->read_lock) != 0)
        return; /* its owner is leaving the hub, or adding it: the next poll serves it */
    ss_err err;
    if (c->hub_flags & HUB_DEFAULTS) {
        /* the listener's transmission mode, for both directions (ss_conn_take and the
         * next write take it over) */
        c->hub_flags &= ~HUB_DEFAULTS;
        ss_conn_set_mode(c, h->mode, h->tag, h->tag_len, &err);
        c->max_message = h->max_message;
    }
    if (atomic_load(&c->closing) || atomic_load(&c->state) != SS_STATE_OPEN) {
        int rc = atomic_load(&c->closing) ? SS_E_CLOSED
                 : c->broken ? c->broken->code : SS_E_NOMEM;
        ended(h, c, rc, ev, n);
        pthread_mutex_unlock(&c->read_lock);
        return;
    }
    int in_scratch = place_input(h, c, &err);
    if (in_scratch < 0) {
        ended(h, c, ss_conn_end(c, SS_E_NOMEM, &err), ev, n);
        pthread_mutex_unlock(&c->read_lock);
        return;
    }
    if (c->hub_flags & HUB_OUT) { /* writable now (or an error shows): read again */
        c->hub_flags &= ~HUB_OUT;
        rearm(h, c);
    }
    read_and_hand_out(h, c, in_scratch, ev, n, max);
    if (in_scratch)
        leave_scratch(c);
    pthread_mutex_unlock(&c->read_lock);
}

static void accept_ready(ss_hub *h, ss_event *ev, int *n, int max)
{
    drain_fd(ss_listener_ready_fd(h->listener));
    /* keep one place free for the channel's first message */
    while (*n + 2 <= max) {
        ss_conn *c;
        ss_err err;
        int rc = ss_listener_accept(h->listener, 0, &c, &err);
        if (rc == SS_E_CLOSED)
            atomic_store(&h->stopping, 1); /* the listener was closed: so is the hub */
        if (rc != SS_OK)
            return;
        uint64_t id;
        if (add_locked(h, c, HUB_DEFAULTS, &id, &err) != SS_OK) {
            ss_conn_free(c);
            continue;
        }
        ss_event *e = &ev[(*n)++];
        memset(e, 0, sizeof *e);
        e->kind = SS_EV_ACCEPTED;
        e->id = id;
        e->conn = c;
        serve(h, c, ev, n, max);
    }
    signal_fd(ss_listener_ready_fd(h->listener)); /* the batch is full: more next time */
}

/* Serve the channels of the revisit list (taken whole: those stopped again go on a new
 * one).  Hub lock held. */
static void serve_revisits(ss_hub *h, ss_event *ev, int *n, int max)
{
    ss_conn *list = h->revisit;
    h->revisit = NULL;
    while (list) {
        ss_conn *c = list;
        list = c->hub_next;
        c->hub_next = NULL;
        c->hub_flags &= ~HUB_REVISIT;
        if (c->hub_flags & HUB_DRAINED) {
            report_drained(h, c, ev, n, max);
            if (c->hub_flags & HUB_DRAINED)
                continue; /* no room: on the next list again */
        }
        if (c->hub_flags & HUB_PAUSED)
            continue; /* resuming puts it back on the list */
        if (*n < max)
            serve(h, c, ev, n, max);
        else
            revisit_later(h, c);
    }
}

int ss_hub_poll(ss_hub *h, int timeout_ms, ss_event *ev, int max, ss_err *err)
{
    if (max < 2)
        return ss_fail(err, SS_E_INVALID, "a batch needs room for at least 2 events");
    long long deadline = ss_deadline(timeout_ms);
    struct epoll_event events[MAX_EPOLL];
    int n = 0;
    pthread_mutex_lock(&h->lock);
    h->used = 0; /* the previous batch was copied out: its memory is free again */
    drop_spill(h);
    h->polls++;
    /* channels with buffered data first */
    serve_revisits(h, ev, &n, max);
    for (;;) {
        if (atomic_load(&h->stopping)) {
            n = n ? n : ss_fail(err, SS_E_CLOSED, "the channel engine was closed");
            break;
        }
        int wait = n ? 0 : ss_remaining(deadline);
        int room = max - n < MAX_EPOLL ? max - n : MAX_EPOLL;
        pthread_mutex_unlock(&h->lock);
        int k = epoll_wait(h->epfd, events, room, wait);
        int errnum = errno;
        pthread_mutex_lock(&h->lock);
        if (k < 0) {
            if (errnum == EINTR)
                continue;
            n = n ? n : ss_fail_errno(err, SS_E_SYSTEM, errnum, "epoll_wait() failed");
            break;
        }
        for (int i = 0; i < k && n < max; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag == TAG_WAKE) {
                drain_fd(h->wake_fd);
                /* woken for channels put on the list meanwhile (added with bytes
                 * buffered, resumed): a poll that was waiting serves them now (one
                 * that has events returns, and the next poll starts with them) */
                if (n == 0)
                    serve_revisits(h, ev, &n, max);
            } else if (tag == TAG_READY) {
                if (n + 2 <= max && !h->no_accept)
                    accept_ready(h, ev, &n, max);
            } else {
                ss_conn *c = conn_of(h, tag);
                if (!c)
                    continue;
                if (events[i].events & EPOLLOUT && c->hub_flags & HUB_WRITING) {
                    flush(h, c);
                    if (c->hub_flags & HUB_DRAINED)
                        report_drained(h, c, ev, &n, max);
                }
                if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP) ||
                    (events[i].events & EPOLLOUT && c->hub_flags & HUB_OUT) ||
                    atomic_load(&c->state) != SS_STATE_OPEN)
                    serve(h, c, ev, &n, max);
            }
        }
        if (n > 0 || k == 0 || wait == 0 || atomic_load(&h->stopping) ||
            atomic_exchange(&h->interrupted, 0))
            break;
    }
    if (n == 0 && atomic_load(&h->stopping))
        n = ss_fail(err, SS_E_CLOSED, "the channel engine was closed");
    else if (n == 0)
        n = ss_fail(err, SS_E_TIMEOUT, "no message within the time-out");
    if (h->revisit)
        signal_fd(h->wake_fd); /* an event loop watching ss_hub_fd comes back at once */
    pthread_mutex_unlock(&h->lock);
    return n;
}

void ss_hub_pause(ss_hub *h, ss_conn *c, int paused)
{
    pthread_mutex_lock(&h->lock);
    if (c->hub == h && !(c->hub_flags & HUB_ENDED) &&
        !!(c->hub_flags & HUB_PAUSED) != !!paused) {
        if (paused) {
            c->hub_flags |= HUB_PAUSED;
        } else {
            c->hub_flags &= ~HUB_PAUSED;
            revisit_later(h, c); /* what OpenSSL or its buffer holds already: next poll */
            signal_fd(h->wake_fd);
        }
        rearm(h, c);
    }
    pthread_mutex_unlock(&h->lock);
}

int ss_hub_want_drain(ss_hub *h, ss_conn *c, size_t below)
{
    /* Under c's write lock, so that no writer changes the queue between the look at its
     * length and the request: a flush that empties it afterwards sees HUB_DRAIN.  Lock
     * order: write lock, attach, hub (as a writer's ss_hub_want_write). */
    pthread_mutex_lock(&c->write_lock);
    ss_hub *held = lock_hub_of(c);
    int rc;
    if (held != h || c->hub_flags & HUB_ENDED) {
        rc = SS_E_CLOSED;
    } else if (c->out.len <= below) {
        rc = 1;
    } else {
        if (!(c->hub_flags & HUB_DRAIN) || below < c->hub_below)
            c->hub_below = below; /* several waiters: the lowest mark tells them all */
        c->hub_flags |= HUB_DRAIN;
        if (!(c->hub_flags & HUB_WRITING)) { /* (it is, unless watching failed) */
            c->hub_flags |= HUB_WRITING;
            if (rearm(h, c) != 0)
                c->hub_flags &= ~HUB_WRITING;
        }
        rc = 0;
    }
    if (held)
        pthread_mutex_unlock(&held->lock);
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

void ss_hub_stop_accepting(ss_hub *h)
{
    pthread_mutex_lock(&h->lock);
    if (h->listener && !h->no_accept) {
        h->no_accept = 1;
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, ss_listener_ready_fd(h->listener), NULL);
    }
    pthread_mutex_unlock(&h->lock);
}

void ss_hub_shutdown(ss_hub *h)
{
    atomic_store(&h->stopping, 1);
    signal_fd(h->wake_fd);
}

void ss_hub_free(ss_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&attach_lock);
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->nslots; i++)
        if (h->slots[i])
            remove_locked(h, h->slots[i]);
    drop_spill(h);
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&attach_lock);
    if (h->epfd >= 0)
        close(h->epfd);
    if (h->wake_fd >= 0)
        close(h->wake_fd);
    free(h->slots);
    free(h->gens);
    free(h->next_free);
    free(h->spill);
    free(h->scratch);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Make the poll in progress (or the next one) return at once, SS_E_TIMEOUT if it found
 * nothing: the pump's way to stop its thread without shutting the hub down. */
static void hub_interrupt(ss_hub *h)
{
    atomic_store(&h->interrupted, 1);
    signal_fd(h->wake_fd);
}

/* ---- the pump: a hub polled by a thread of its own ------------------------------------
 *
 * The thread polls (reads, decrypts, deframes), publishes the batch and signals the pump's
 * eventfd, then waits until the consumer has released the batch before polling again: the
 * batch's bytes live in the hub's scratch buffer, which the next poll reuses.  The consumer
 * (an event loop's reader callback) only copies the batch out and releases it; while it
 * runs the application's code, the thread is already reading the next batch.
 *
 * Why the thread's loop ends: ss_pump_free sets stop and interrupts the poll; a poll that
 * fails (the hub shut down, its listener closed) is published as the last batch. */

#define PUMP_FREE 0  /* the thread owns the batch buffer (polling or about to) */
#define PUMP_READY 1 /* a batch is published, the consumer owns the buffer */

struct ss_pump {
    ss_hub *hub;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int fd;       /* eventfd: readable when a batch is published */
    int state;    /* PUMP_* */
    int stop;
    int taken;    /* the published batch was handed to the consumer */
    int n;        /* the published batch: events, or a negative code (final) */
    ss_err err;
    int max;
    ss_event *ev;
};

static void *pump_main(void *arg)
{
    ss_pump *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->state == PUMP_READY && !p->stop)
            pthread_cond_wait(&p->cv, &p->lock);
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->lock);
        ss_err err;
        int n = ss_hub_poll(p->hub, -1, p->ev, p->max, &err);
        pthread_mutex_lock(&p->lock);
        if (n == SS_E_TIMEOUT) /* interrupted by ss_pump_free: nothing of it is held */
            continue;
        p->n = n;
        p->taken = 0;
        if (n < 0)
            p->err = err;
        p->state = PUMP_READY;
        signal_fd(p->fd);
        if (n < 0)
            break; /* the hub is closed (or broken): nothing more will come */
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int ss_pump_new(ss_hub *h, int max_events, ss_pump **out, ss_err *err)
{
    *out = NULL;
    if (max_events < 2)
        return ss_fail(err, SS_E_INVALID, "a batch needs room for at least 2 events");
    ss_pump *p = calloc(1, sizeof *p);
    if (!p || !(p->ev = calloc((size_t)max_events, sizeof *p->ev))) {
        free(p);
        return ss_fail(err, SS_E_NOMEM, "out of memory creating the engine's thread");
    }
    p->hub = h;
    p->max = max_events;
    p->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->fd < 0) {
        int rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "cannot create an eventfd");
        free(p->ev);
        free(p);
        return rc;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cv, NULL);
    int e = pthread_create(&p->thread, NULL, pump_main, p);
    if (e != 0) {
        int rc = ss_fail_errno(err, SS_E_SYSTEM, e, "cannot start the engine's thread");
        close(p->fd);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cv);
        free(p->ev);
        free(p);
        return rc;
    }
    *out = p;
    return SS_OK;
}

int ss_pump_fd(ss_pump *p) { return p->fd; }

int ss_pump_take(ss_pump *p, ss_event **events, ss_err *err)
{
    drain_fd(p->fd);
    pthread_mutex_lock(&p->lock);
    int n = 0;
    if (p->state == PUMP_READY) {
        n = p->n;
        p->taken = 1;
        *events = p->ev;
        if (n < 0 && err)
            *err = p->err;
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}

void ss_pump_release(ss_pump *p)
{
    pthread_mutex_lock(&p->lock);
    if (p->state == PUMP_READY && p->n > 0) {
        p->state = PUMP_FREE;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->lock);
}

void ss_pump_free(ss_pump *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->lock);
    hub_interrupt(p->hub);
    pthread_join(p->thread, NULL);
    if (p->state == PUMP_READY && !p->taken) {
        /* a batch nobody took: its new channels have no other owner */
        for (int i = 0; i < p->n; i++)
            if (p->ev[i].kind == SS_EV_ACCEPTED && p->ev[i].conn) {
                ss_hub_remove(p->hub, p->ev[i].conn);
                ss_conn_free(p->ev[i].conn);
            }
    }
    atomic_store(&p->hub->interrupted, 0);
    close(p->fd);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cv);
    free(p->ev);
    free(p);
}

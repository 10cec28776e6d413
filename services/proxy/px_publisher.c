/* px_publisher: gets the proxy's trace and decision messages (px_trace.c)
 * to JetStream or, while it cannot, to the on-disk spool (px_spool), and
 * replays the spool in order once the bus takes messages again. Request
 * threads queue encoded messages; one sender thread publishes them in
 * batches (docs/bus.md). */
#include "px_trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "px_spool.h"
#include "rl_cond.h"

#define MSG_FIXED_MAX (1u << 20) /* room in a message besides the two bodies */
#define SPOOL_MAX_DEFAULT (1LL << 30)
#define REPLAY_BATCH 1024         /* records published before waiting for their acks */
#define IDLE_WAIT_MS 20           /* replay thread's nap while records wait for the bus */
#define QUIET_WAIT_MS 1000        /* ... and with nothing spooled (an append wakes it) */
#define BACKOFF_MS 5              /* after the bus refused (window full) */
#define NACK_BACKOFF_MIN_MS 10    /* after nacks: the server refuses what it gets... */
#define NACK_BACKOFF_MAX_MS 1000  /* ...so replay slows down, doubling up to this */
#define ACK_DRAIN_WAIT_MS 2000    /* wait for a batch's acks before committing */
#define COMMIT_FORCE_MS 30000     /* commit anyway once the last replay publish is this old */
#define SYNC_INTERVAL_MS 200      /* fdatasync of the spool at most this often */
#define FLUSH_MS 2000             /* destroy: replay what it can for this long */
#define DESTROY_ACK_WAIT_MS 10000 /* destroy: wait for acks (> the bus's ack timeout) */

struct px_publisher {
    rl_bus_t *bus;
    px_spool_t *spool;
    pthread_mutex_t spool_mu; /* guards spool against close while a nack appends */
    size_t body_max, msg_max;
    rl_buf_t batch; /* the sender thread's: the lines of one bus message */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;

    atomic_uint_fast64_t nacks; /* px_publisher_nack calls, for the replay backoff */

    /* The hand-over to the bus: request threads queue encoded messages here
     * and one sender thread publishes them in batches, so libnats' locks,
     * its flusher wake-ups and its socket writes are paid per batch, not per
     * request (measured: about half the proxy's CPU per request otherwise). */
    pthread_t sender;
    pthread_mutex_t q_mu;
    pthread_cond_t q_cond; /* the queue got its first message, or q_stop */
    struct queued *q_head, *q_tail;
    struct queued *q_free; /* sent messages' nodes, kept for the next ones */
    size_t q_nfree;
    size_t q_len;
    size_t q_bytes;
    bool q_sending; /* the sender is publishing a batch it took */
    bool q_stop;
    bool threads_stopped; /* px_publisher_stop ran (main thread only) */

    rl_gauge_t *depth;
    rl_counter_t *dropped, *pub_trace, *pub_decision, *spooled, *replayed;
    rl_histogram_t *lines;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t bus_pending(px_publisher_t *pub)
{
    rl_bus_stats_t st;
    rl_bus_stats(pub->bus, &st);
    return st.js_pending;
}

/* Under mu: the replay thread checks the spool empty and sleeps under it,
 * so the first record's wake cannot fall between the two (quiet_wait). */
static void wake(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->mu);
    pthread_cond_signal(&pub->cond);
    pthread_mutex_unlock(&pub->mu);
}

/* Traces or decisions in a bus message: one per line (docs/bus.md). */
static uint64_t lines_in(const void *data, size_t len)
{
    uint64_t n = 1;
    for (const char *p = data, *end = p + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        n++;
    return n;
}

/* Appends a bus message to the spool, counting the traces or decisions it
 * carries as spooled or dropped. */
static rl_status_t spool_put(px_publisher_t *pub, const char *subject, const char *msg_id,
                             const void *data, size_t len)
{
    rl_status_t st = px_spool_append(pub->spool, subject, msg_id, data, len);
    uint64_t n = lines_in(data, len);
    if (st == RL_OK) {
        rl_counter_add(pub->spooled, n);
        /* only the first record needs the replay thread at once (it sleeps
         * while the spool is empty, then polls every IDLE_WAIT_MS), and a
         * wake per request costs a futex call on the request path while
         * NATS is down */
        if (px_spool_depth(pub->spool) == 1)
            wake(pub);
    } else {
        rl_counter_add(pub->dropped, n);
    }
    return st;
}

/* A message waiting for the sender thread. Its node and buffer are
 * recycled: a trace is encoded straight into a node taken from the free list
 * and the sender gives the node back, so a request costs no malloc here (a
 * ~1.5 KB malloc per trace, freed on another thread, showed in profiles with
 * the heap consolidations it triggered). */
struct queued {
    struct queued *next;
    rl_counter_t *published;
    char subject[RL_BUS_SUBJECT_MAX];
    char msg_id[PX_ID_LEN + 2];
    rl_buf_t msg; /* the encoded message */
};

#define QUEUE_MAX_MESSAGES 65536
#define QUEUE_MAX_BYTES ((size_t)256 << 20)
#define SEND_GATHER_MS 3
/* Free nodes kept, and the largest buffer a kept node holds on to. */
#define FREE_NODES_MAX 512
#define FREE_NODE_KEEP_BYTES (16 * 1024)

static void node_free(struct queued *q)
{
    rl_buf_free(&q->msg);
    free(q);
}

/* A node from the free list, or a new one; NULL when out of memory. */
static struct queued *node_get(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    struct queued *q = pub->q_free;
    if (q) {
        pub->q_free = q->next;
        pub->q_nfree--;
    }
    pthread_mutex_unlock(&pub->q_mu);
    if (!q) {
        q = malloc(sizeof *q);
        if (!q)
            return NULL;
        rl_buf_init(&q->msg, 0);
    }
    q->next = NULL;
    rl_buf_reset(&q->msg);
    q->msg.max = pub->msg_max;
    return q;
}

/* Gives n nodes back: kept up to FREE_NODES_MAX, freed beyond. */
static void nodes_put(px_publisher_t *pub, struct queued **nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        rl_buf_recycle(&nodes[i]->msg, FREE_NODE_KEEP_BYTES, 0);
        nodes[i]->next = i + 1 < n ? nodes[i + 1] : NULL;
    }
    pthread_mutex_lock(&pub->q_mu);
    bool keep = n > 0 && pub->q_nfree + n <= FREE_NODES_MAX;
    if (keep) {
        nodes[n - 1]->next = pub->q_free;
        pub->q_free = nodes[0];
        pub->q_nfree += n;
    }
    pthread_mutex_unlock(&pub->q_mu);
    for (size_t i = 0; !keep && i < n; i++)
        node_free(nodes[i]);
}

/* To the sender thread while nothing older waits in the spool (order) and
 * the queue has room; else to the spool. Takes q. */
static rl_status_t publish(px_publisher_t *pub, struct queued *q)
{
    if (px_spool_depth(pub->spool) == 0 && rl_bus_ready_hint(pub->bus)) {
        size_t len = q->msg.len;
        pthread_mutex_lock(&pub->q_mu);
        bool room = pub->q_len < QUEUE_MAX_MESSAGES && pub->q_bytes + len < QUEUE_MAX_BYTES;
        bool first = pub->q_head == NULL;
        if (room) {
            if (pub->q_tail)
                pub->q_tail->next = q;
            else
                pub->q_head = q;
            pub->q_tail = q;
            pub->q_len++;
            pub->q_bytes += len;
        }
        pthread_mutex_unlock(&pub->q_mu);
        if (room && first) /* no system call unless the sender sleeps */
            pthread_cond_signal(&pub->q_cond);
        if (room)
            return RL_OK;
    }
    rl_status_t st = spool_put(pub, q->subject, q->msg_id, q->msg.data, q->msg.len);
    nodes_put(pub, &q, 1);
    return st;
}

/* One bus message carries up to this many traces (or decisions) of one
 * subject, one per line, in at most BATCH_BYTES_MAX bytes (a larger one goes
 * alone). JetStream's cost is per message (about 30 us of proxy and 25 us of
 * server CPU, docs/performance.md): under load it is shared by the batch. */
#define BATCH_MESSAGES_MAX 256
#define BATCH_BYTES_MAX ((size_t)256 << 10)
/* Queued messages looked at when gathering one subject's batch. */
#define BATCH_SCAN_MAX 1024

/* Takes the head of *list and the queued messages after it of the same
 * subject, in order, within the batch's bounds, out of *list into group. */
static size_t take_group(struct queued **list, struct queued **group)
{
    struct queued *head = *list;
    size_t n = 0, bytes = 0, scanned = 0;
    struct queued **pp = list;
    while (*pp && n < BATCH_MESSAGES_MAX && scanned++ < BATCH_SCAN_MAX) {
        struct queued *x = *pp;
        if (strcmp(x->subject, head->subject) != 0) {
            pp = &x->next;
            continue;
        }
        if (n > 0 && bytes + 1 + x->msg.len > BATCH_BYTES_MAX)
            break; /* the rest of this subject starts the next batch: order kept */
        bytes += (n > 0) + x->msg.len;
        group[n++] = x;
        *pp = x->next;
    }
    return n;
}

/* Publishes a group as one bus message: its messages one per line, under the
 * first one's Nats-Msg-Id (the same group replayed from the spool keeps it). */
static void send_group(px_publisher_t *pub, struct queued **group, size_t n, bool *refused)
{
    const char *data = group[0]->msg.data;
    size_t len = group[0]->msg.len;
    rl_status_t st = RL_OK;
    if (n > 1) {
        rl_buf_reset(&pub->batch);
        for (size_t i = 0; i < n && st == RL_OK; i++) {
            if (i > 0)
                st = rl_buf_append(&pub->batch, "\n", 1);
            if (st == RL_OK)
                st = rl_buf_append(&pub->batch, group[i]->msg.data, group[i]->msg.len);
        }
        data = pub->batch.data;
        len = pub->batch.len;
    }
    if (st != RL_OK) { /* out of memory: one message each */
        for (size_t i = 0; i < n; i++)
            send_group(pub, &group[i], 1, refused);
        return;
    }
    st = RL_ERR_UNAVAILABLE;
    if (!*refused && px_spool_depth(pub->spool) == 0)
        st = rl_bus_publish_js(pub->bus, group[0]->subject, group[0]->msg_id, data, len);
    if (st == RL_OK) {
        rl_histogram_observe(pub->lines, (double)n);
        for (size_t i = 0; i < n; i++)
            rl_counter_add(group[i]->published, 1);
    } else if (st == RL_ERR_INVALID || st == RL_ERR_TOO_LARGE) {
        rl_counter_add(pub->dropped, n); /* no retry will help */
    } else {
        *refused = true;
        pthread_mutex_lock(&pub->spool_mu);
        if (pub->spool)
            spool_put(pub, group[0]->subject, group[0]->msg_id, data, len);
        pthread_mutex_unlock(&pub->spool_mu);
    }
}

/* Publishes what is queued, a batch per subject; what the bus refuses, and
 * everything after it, goes to the spool (order kept). */
static void send_batch(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    struct queued *q = pub->q_head;
    pub->q_head = pub->q_tail = NULL;
    pub->q_len = 0;
    pub->q_bytes = 0;
    pub->q_sending = q != NULL;
    pthread_mutex_unlock(&pub->q_mu);
    bool refused = false;
    struct queued *group[BATCH_MESSAGES_MAX];
    while (q) {
        size_t n = take_group(&q, group);
        send_group(pub, group, n, &refused);
        nodes_put(pub, group, n);
    }
    pthread_mutex_lock(&pub->q_mu);
    pub->q_sending = false;
    pthread_mutex_unlock(&pub->q_mu);
}

static bool queue_empty(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    bool empty = pub->q_head == NULL;
    pthread_mutex_unlock(&pub->q_mu);
    return empty;
}

rl_status_t px_publisher_flush(px_publisher_t *pub, long timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&pub->q_mu);
        bool idle = pub->q_head == NULL && !pub->q_sending;
        pthread_mutex_unlock(&pub->q_mu);
        if (idle)
            return RL_OK;
        if (mono_ms() >= end)
            return rl_error(RL_ERR_TIMEOUT, "publisher queue not drained in %ld ms", timeout_ms);
        nap_ms(1);
    }
}

/* Sleeps while nothing is queued; once something is, lets a batch gather
 * for SEND_GATHER_MS and publishes it. Idle, the thread costs nothing; under
 * load it wakes once per batch. */
static void *sender_main(void *arg)
{
    px_publisher_t *pub = arg;
    pthread_setname_np(pthread_self(), "px-sender");
    for (;;) {
        pthread_mutex_lock(&pub->q_mu);
        while (pub->q_head == NULL && !pub->q_stop)
            pthread_cond_wait(&pub->q_cond, &pub->q_mu);
        bool stop = pub->q_stop;
        pthread_mutex_unlock(&pub->q_mu);
        if (!stop)
            nap_ms(SEND_GATHER_MS);
        send_batch(pub);
        if (stop && queue_empty(pub))
            return NULL;
    }
}

/* Ends the sender once what is queued went to the bus or the spool. */
static void stop_sender(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    pub->q_stop = true;
    pthread_cond_broadcast(&pub->q_cond);
    pthread_mutex_unlock(&pub->q_mu);
    pthread_join(pub->sender, NULL);
}

static rl_status_t publish_one(px_publisher_t *pub, const px_trace_t *t, bool decision)
{
    if (!pub || !t)
        return rl_error(RL_ERR_INVALID, "px_publisher: missing argument");
    char subject[RL_BUS_SUBJECT_MAX];
    rl_status_t st =
        decision ? rl_bus_subject_decisions(t->tenant_id, t->agent_id, subject, sizeof subject)
                 : rl_bus_subject_traces(t->tenant_id, t->agent_id, subject, sizeof subject);
    size_t idlen = strnlen(t->trace_id, sizeof t->trace_id);
    if (st == RL_OK && (idlen == 0 || idlen == sizeof t->trace_id))
        st = rl_error(RL_ERR_INVALID, "trace without a trace id");
    if (st != RL_OK) {
        rl_counter_add(pub->dropped, 1);
        return st;
    }
    struct queued *q = node_get(pub);
    if (!q) {
        rl_counter_add(pub->dropped, 1);
        return rl_error(RL_ERR_NOMEM, "publisher queue node");
    }
    /* Nats-Msg-Id: the trace id; a decision's gets ":d" so that every message
     * of the bus has an id of its own (dedupe is per stream anyway). */
    memcpy(q->msg_id, t->trace_id, idlen);
    if (decision)
        memcpy(q->msg_id + idlen, ":d", 3);
    else
        q->msg_id[idlen] = '\0';
    memcpy(q->subject, subject, sizeof subject);
    q->published = decision ? pub->pub_decision : pub->pub_trace;
    st = px_trace_encode(t, decision, pub->body_max, &q->msg);
    if (st != RL_OK) {
        rl_counter_add(pub->dropped, 1);
        nodes_put(pub, &q, 1);
        return st;
    }
    return publish(pub, q);
}

rl_status_t px_publisher_decision(px_publisher_t *pub, const px_trace_t *t)
{
    return publish_one(pub, t, true);
}

rl_status_t px_publisher_trace(px_publisher_t *pub, const px_trace_t *t)
{
    return publish_one(pub, t, false);
}

void px_publisher_nack(px_publisher_t *pub, const rl_bus_nack_t *nack)
{
    if (!pub || !nack || !nack->subject || !nack->msg_id)
        return;
    atomic_fetch_add(&pub->nacks, 1);
    pthread_mutex_lock(&pub->spool_mu);
    if (pub->spool)
        (void)spool_put(pub, nack->subject, nack->msg_id, nack->data, nack->len);
    else
        rl_counter_add(pub->dropped, 1);
    pthread_mutex_unlock(&pub->spool_mu);
}

uint64_t px_publisher_spool_depth(px_publisher_t *pub)
{
    return pub ? px_spool_depth(pub->spool) : 0;
}

/* ---- the replay thread ---- */

typedef struct {
    bool uncommitted;     /* records advanced past since the latest commit */
    int64_t last_publish; /* when the latest of them was handed to the bus */
    uint64_t corrupt_seen;
    uint64_t nacks_seen;
    int64_t last_nack;       /* when nacks_seen last changed */
    int64_t nack_backoff_ms; /* 0 once no nack came back for NACK_BACKOFF_MAX_MS */
} replay_t;

static bool stopping(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->mu);
    bool s = pub->stop;
    pthread_mutex_unlock(&pub->mu);
    return s;
}

/* Publishes spooled records in order until the spool is empty, max records
 * went out, or the bus refuses. Returns how many went out; *refused tells
 * whether the bus refused one. */
static size_t replay_batch(px_publisher_t *pub, replay_t *r, size_t max, bool *refused)
{
    size_t n = 0;
    *refused = false;
    while (n < max) {
        px_spool_record_t rec;
        rl_status_t st = px_spool_peek(pub->spool, &rec);
        if (st == RL_ERR_NOT_FOUND)
            break;
        if (st != RL_OK) { /* I/O: try again later */
            *refused = true;
            break;
        }
        st = rl_bus_publish_js(pub->bus, rec.subject, rec.msg_id, rec.data, rec.len);
        /* counted in traces (decisions), like spooled: a record may be a batch */
        if (st == RL_OK) {
            rl_counter_add(pub->replayed, lines_in(rec.data, rec.len));
            r->last_publish = mono_ms();
        } else if (st == RL_ERR_INVALID || st == RL_ERR_TOO_LARGE) {
            rl_counter_add(pub->dropped, lines_in(rec.data, rec.len)); /* can never be published */
        } else {
            *refused = true; /* unavailable (window full, disconnected), no memory */
            break;
        }
        px_spool_advance(pub->spool);
        r->uncommitted = true;
        n++;
    }
    return n;
}

/* Commits the read position once every record before it was acked or, if it
 * failed, spooled again by px_publisher_nack: the bus has no publish awaiting
 * an ack (its on_ack_failure runs before the count drops), or the latest
 * replayed publish is older than any ack timeout. A crash before the commit
 * replays those records again: duplicates, which Nats-Msg-Id and the
 * consumers absorb. */
static void maybe_commit(px_publisher_t *pub, replay_t *r, bool force)
{
    if (!r->uncommitted)
        return;
    if (force || bus_pending(pub) == 0 || mono_ms() - r->last_publish >= COMMIT_FORCE_MS) {
        if (px_spool_commit(pub->spool) == RL_OK)
            r->uncommitted = false;
    }
}

static bool wait_acks(px_publisher_t *pub, int64_t max_ms, bool until_stop)
{
    int64_t end = mono_ms() + max_ms;
    while (bus_pending(pub) > 0) {
        if (mono_ms() >= end || (until_stop && stopping(pub)))
            return false;
        nap_ms(1);
    }
    return true;
}

static void update_levels(px_publisher_t *pub, replay_t *r)
{
    px_spool_stats_t st;
    px_spool_stats(pub->spool, &st);
    rl_gauge_set(pub->depth, (double)st.depth);
    if (st.corrupt > r->corrupt_seen) {
        rl_counter_add(pub->dropped, st.corrupt - r->corrupt_seen);
        r->corrupt_seen = st.corrupt;
    }
}

/* Waits up to ms; a wake() (something was spooled) or a stop ends it early
 * unless until_stop, when only a stop does. */
static void idle_wait(px_publisher_t *pub, int64_t ms, bool until_stop)
{
    struct timespec ts = rl_cond_deadline(ms);
    pthread_mutex_lock(&pub->mu);
    while (!pub->stop) {
        if (pthread_cond_timedwait(&pub->cond, &pub->mu, &ts) == ETIMEDOUT || !until_stop)
            break;
    }
    pthread_mutex_unlock(&pub->mu);
}

/* Nothing spooled: sleeps until spool_put's wake (or QUIET_WAIT_MS), not
 * 50 times a second. */
static void quiet_wait(px_publisher_t *pub)
{
    struct timespec ts = rl_cond_deadline(QUIET_WAIT_MS);
    pthread_mutex_lock(&pub->mu);
    if (!pub->stop && px_spool_depth(pub->spool) == 0)
        pthread_cond_timedwait(&pub->cond, &pub->mu, &ts);
    pthread_mutex_unlock(&pub->mu);
}

/* A server that refuses every message (its storage full, say) nacks at once
 * what replay sends, and replay would spin on the same records: while nacks
 * keep coming, pause before each round, 10 ms doubling to 1 s. */
static void nack_backoff(px_publisher_t *pub, replay_t *r)
{
    uint64_t nacks = atomic_load(&pub->nacks);
    int64_t now = mono_ms();
    if (nacks != r->nacks_seen) {
        r->nacks_seen = nacks;
        r->last_nack = now;
        r->nack_backoff_ms = r->nack_backoff_ms ? r->nack_backoff_ms * 2 : NACK_BACKOFF_MIN_MS;
        if (r->nack_backoff_ms > NACK_BACKOFF_MAX_MS)
            r->nack_backoff_ms = NACK_BACKOFF_MAX_MS;
    } else if (now - r->last_nack > NACK_BACKOFF_MAX_MS) {
        r->nack_backoff_ms = 0;
    }
    if (r->nack_backoff_ms && px_spool_depth(pub->spool) > 0)
        idle_wait(pub, r->nack_backoff_ms, true);
}

static void *replay_main(void *arg)
{
    px_publisher_t *pub = arg;
    pthread_setname_np(pthread_self(), "px-replay");
    replay_t r = {0};
    int64_t last_sync = mono_ms();
    while (!stopping(pub)) {
        size_t sent = 0;
        bool refused = false;
        nack_backoff(pub, &r);
        if (px_spool_depth(pub->spool) > 0 && rl_bus_is_ready(pub->bus) && !stopping(pub))
            sent = replay_batch(pub, &r, REPLAY_BATCH, &refused);
        if (sent == REPLAY_BATCH) /* a long replay: let the acks in so segments can go */
            wait_acks(pub, ACK_DRAIN_WAIT_MS, true);
        maybe_commit(pub, &r, false);
        if (mono_ms() - last_sync >= SYNC_INTERVAL_MS) {
            (void)px_spool_sync(pub->spool);
            last_sync = mono_ms();
        }
        update_levels(pub, &r);
        if (refused) {
            idle_wait(pub, BACKOFF_MS, false);
        } else if (sent == 0 && px_spool_depth(pub->spool) == 0 && !r.uncommitted) {
            (void)px_spool_sync(pub->spool);
            last_sync = mono_ms();
            quiet_wait(pub);
        } else if (sent == 0) {
            idle_wait(pub, IDLE_WAIT_MS, false);
        }
    }

    /* Stopping: replay what the bus takes within FLUSH_MS, then wait for every
     * ack (failures are spooled again) before the last commit. */
    int64_t end = mono_ms() + FLUSH_MS;
    while (px_spool_depth(pub->spool) > 0 && rl_bus_is_ready(pub->bus) && mono_ms() < end) {
        bool refused = false;
        replay_batch(pub, &r, REPLAY_BATCH, &refused);
        if (refused)
            nap_ms(BACKOFF_MS);
    }
    if (wait_acks(pub, DESTROY_ACK_WAIT_MS, false))
        maybe_commit(pub, &r, true);
    (void)px_spool_sync(pub->spool);
    update_levels(pub, &r);
    return NULL;
}

/* ---- create / destroy ---- */

static rl_status_t register_metrics(px_publisher_t *pub, rl_metrics_t *m)
{
    if (!m)
        return RL_OK;
    rl_status_t st = rl_metrics_gauge(
        m, "renlayer_proxy_spool_depth",
        "Bus messages (one or more traces each) waiting in the proxy's on-disk spool", NULL,
        &pub->depth);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_spool_dropped_total",
                                "Messages lost: spool full, disk error, corrupt record, or "
                                "a message the bus can never take",
                                NULL, &pub->dropped);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_messages_published_total",
                                "Messages handed to JetStream on the request path",
                                "kind=\"trace\"", &pub->pub_trace);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_messages_published_total", NULL,
                                "kind=\"decision\"", &pub->pub_decision);
    if (st == RL_OK)
        st = rl_metrics_counter(
            m, "renlayer_proxy_messages_spooled_total",
            "Traces and decisions written to the spool (bus unavailable, or not acked)", NULL,
            &pub->spooled);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_messages_replayed_total",
                                "Spooled traces and decisions handed to JetStream", NULL,
                                &pub->replayed);
    static const double lines[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    if (st == RL_OK)
        st = rl_metrics_histogram(m, "renlayer_proxy_bus_message_lines",
                                  "Traces or decisions per bus message the sender thread "
                                  "published (docs/bus.md)",
                                  NULL, lines, sizeof lines / sizeof *lines, &pub->lines);
    return st;
}

static void destroy_locks(px_publisher_t *pub)
{
    pthread_cond_destroy(&pub->q_cond);
    pthread_mutex_destroy(&pub->q_mu);
    pthread_cond_destroy(&pub->cond);
    pthread_mutex_destroy(&pub->mu);
    pthread_mutex_destroy(&pub->spool_mu);
}

/* Undoes what px_publisher_create did before its threads ran: the spool,
 * the locks, the batch buffer and pub itself. */
static void free_unstarted(px_publisher_t *pub)
{
    px_spool_close(pub->spool);
    destroy_locks(pub);
    rl_buf_free(&pub->batch);
    free(pub);
}

rl_status_t px_publisher_create(const px_publisher_options_t *opts, px_publisher_t **out)
{
    if (!opts || !out || !opts->bus || !opts->spool_dir || opts->spool_max_bytes < 0)
        return rl_error(RL_ERR_INVALID, "px_publisher: missing bus or spool_dir");
    px_publisher_t *pub = calloc(1, sizeof *pub);
    if (!pub)
        return rl_error(RL_ERR_NOMEM, "px_publisher");
    pub->bus = opts->bus;
    rl_buf_init(&pub->batch, BATCH_BYTES_MAX);
    atomic_init(&pub->nacks, 0);
    pub->body_max = opts->body_max_bytes ? opts->body_max_bytes : PX_TRACE_BODY_MAX_DEFAULT;
    /* a body can grow 6x when escaped (control bytes as \u00XX) */
    pub->msg_max = pub->body_max > (SIZE_MAX - MSG_FIXED_MAX) / 12
                       ? SIZE_MAX / 2
                       : 12 * pub->body_max + MSG_FIXED_MAX;
    rl_status_t st = register_metrics(pub, opts->metrics);
    if (st != RL_OK) {
        free(pub);
        return st;
    }
    px_spool_options_t so = {
        .dir = opts->spool_dir,
        .max_bytes = opts->spool_max_bytes ? opts->spool_max_bytes : SPOOL_MAX_DEFAULT,
        .record_max = pub->msg_max > BATCH_BYTES_MAX ? pub->msg_max : BATCH_BYTES_MAX,
    };
    st = px_spool_open(&so, &pub->spool);
    if (st != RL_OK) {
        free(pub);
        return st;
    }
    pthread_mutex_init(&pub->spool_mu, NULL);
    pthread_mutex_init(&pub->mu, NULL);
    rl_cond_init(&pub->cond);
    rl_gauge_set(pub->depth, (double)px_spool_depth(pub->spool));
    pthread_mutex_init(&pub->q_mu, NULL);
    pthread_cond_init(&pub->q_cond, NULL);
    int rc = pthread_create(&pub->sender, NULL, sender_main, pub);
    if (rc != 0) {
        free_unstarted(pub);
        return rl_error(RL_ERR_INTERNAL, "px_publisher: sender thread: %s", strerror(rc));
    }
    rc = pthread_create(&pub->thread, NULL, replay_main, pub);
    if (rc != 0) {
        stop_sender(pub);
        free_unstarted(pub);
        return rl_error(RL_ERR_INTERNAL, "px_publisher: replay thread: %s", strerror(rc));
    }
    *out = pub;
    return RL_OK;
}

void px_publisher_stop(px_publisher_t *pub)
{
    if (!pub || pub->threads_stopped)
        return;
    /* the sender first: what it holds goes to the bus or the spool */
    stop_sender(pub);
    pthread_mutex_lock(&pub->mu);
    pub->stop = true;
    pthread_cond_broadcast(&pub->cond);
    pthread_mutex_unlock(&pub->mu);
    pthread_join(pub->thread, NULL);
    pub->threads_stopped = true;
}

void px_publisher_destroy(px_publisher_t *pub)
{
    if (!pub)
        return;
    px_publisher_stop(pub);
    /* no metric from here on: the registry may be gone already */
    pthread_mutex_lock(&pub->spool_mu);
    px_spool_close(pub->spool);
    pub->spool = NULL;
    pthread_mutex_unlock(&pub->spool_mu);

    destroy_locks(pub);
    while (pub->q_free) {
        struct queued *next = pub->q_free->next;
        node_free(pub->q_free);
        pub->q_free = next;
    }
    rl_buf_free(&pub->batch);
    free(pub);
}

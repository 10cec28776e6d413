#include "tw_consumer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "rl_log.h"
#include "tw_store.h"
#include "rl_cond.h"

#define FETCH_MAX_BYTES ((int64_t)32 << 20) /* bytes of messages per batch */
#define FETCH_BYTES_PER_ITEM ((int64_t)4 << 10) /* x batch size: the usual bytes per batch */
#define FETCH_TIMEOUT_MS 5000               /* a no_wait fetch normally ends at once */
#define ROWS_MAX ((size_t)160 << 20)        /* bytes of COPY text per table and batch */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LAG_POLL_MS 1000    /* consumer info for the pending gauges */
#define JS_API_WAIT_MS 5000 /* consumer create/update/info requests */
#define LOG_REPEAT_MS 30000 /* a failure that persists is logged again this often */
#define DEAD_LOGS_PER_WINDOW 20

static const double BATCH_SIZE_BUCKETS[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

/* A batch moves through three stages, each on its own thread, so fetching,
 * parsing and writing of consecutive batches overlap:
 * FREE -> FETCHING -> FETCHED (fetcher) -> ENCODING -> READY (encoder) ->
 * WRITING -> FREE (writer). */
enum { SLOT_FREE, SLOT_FETCHING, SLOT_FETCHED, SLOT_ENCODING, SLOT_READY, SLOT_WRITING };
#define SLOTS 3

typedef struct {
    int state;
    uint64_t seq; /* fill order */
    tw_batch_t batch;
    natsMsgList list;
} slot_t;

struct tw_consumer {
    rl_bus_t *bus;
    tw_kind_t kind;
    const char *stream, *durable, *filter, *label;
    int batch_size;
    long batch_wait_ms, ack_wait_ms, max_ack_pending, drain_ms;
    int retention_days;

    /* fetcher thread */
    natsSubscription *sub;
    uint64_t bound_gen; /* bus reconnect count when bound */
    int64_t lag_at;
    uint64_t fills;

    /* writer thread */
    tw_store_t *store;
    int64_t dead_window_at; /* rate limit of dead-letter logs */
    int dead_logged;

    /* shared, under lock */
    slot_t slots[SLOTS];
    bool fetcher_done, encoder_done;

    pthread_t fetcher, encoder, writer;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* slot states, stop */
    _Atomic bool stopping, bound;
    _Atomic int64_t drain_until; /* monotonic ms; set by stop */

    rl_counter_t *written, *dropped, *batches, *fetch_errors, *retries;
    rl_counter_t *dead[TW_REASON_COUNT];
    rl_histogram_t *batch_seconds, *batch_messages;
    rl_gauge_t *pending, *ack_pending;
};

const char *tw_consumer_durable(tw_kind_t kind)
{
    return kind == TW_KIND_TRACE ? "trace-writer-traces" : "trace-writer-decisions";
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Sleeps ms, or less when asked to stop. */
static void pause_ms(tw_consumer_t *c, long ms)
{
    struct timespec until = rl_cond_deadline(ms);
    pthread_mutex_lock(&c->lock);
    while (!atomic_load(&c->stopping) && pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&c->lock);
}

static uint64_t bus_generation(tw_consumer_t *c)
{
    rl_bus_stats_t st;
    rl_bus_stats(c->bus, &st);
    return st.reconnects;
}

/* ---- binding (fetcher thread) ------------------------------------------------------------- */

/* Waits until no batch is in hand (the writer acks through the subscription). */
static void wait_idle(tw_consumer_t *c)
{
    pthread_mutex_lock(&c->lock);
    for (;;) {
        bool busy = false;
        for (int i = 0; i < SLOTS; i++)
            busy = busy || c->slots[i].state != SLOT_FREE;
        if (!busy)
            break;
        pthread_cond_wait(&c->cond, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
}

static void unbind(tw_consumer_t *c)
{
    if (!c->sub)
        return;
    wait_idle(c);
    atomic_store(&c->bound, false);
    /* Destroy only: Unsubscribe would delete a consumer the subscription had created */
    natsSubscription_Destroy(c->sub);
    c->sub = NULL;
}

/* Creates or updates the durable consumer, then binds a pull subscription to it. */
static bool bind(tw_consumer_t *c)
{
    if (!rl_bus_is_ready(c->bus))
        return false;
    uint64_t gen = bus_generation(c);
    jsCtx *js = rl_bus_js(c->bus);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = JS_API_WAIT_MS;

    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = c->durable;
    cc.Description = "RenLayer trace-writer: writes the stream to PostgreSQL";
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)c->ack_wait_ms * 1000000;
    cc.MaxAckPending = c->max_ack_pending;
    cc.FilterSubject = c->filter;
    cc.MaxRequestBatch = 10000;

    jsErrCode jerr = 0;
    natsStatus s = js_AddConsumer(NULL, js, c->stream, &cc, &jo, &jerr);
    if (s != NATS_OK && jerr != 0) {
        /* it exists with other settings (an older release, another replica's
         * options): bring it to ours */
        jsErrCode uerr = 0;
        s = js_UpdateConsumer(NULL, js, c->stream, &cc, &jo, &uerr);
        if (s != NATS_OK)
            jerr = uerr;
    }
    if (s != NATS_OK) {
        rl_log(RL_LOG_WARN, "cannot create the durable consumer", "{s:s,s:s,s:s,s:i,s:s}", "stream",
               c->stream, "durable", c->durable, "status", natsStatus_GetText(s), "js_err_code",
               (int)jerr, "detail", nats_GetLastError(NULL));
        return false;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->stream;
    so.Consumer = c->durable;
    s = js_PullSubscribe(&c->sub, js, c->filter, c->durable, &jo, &so, &jerr);
    if (s != NATS_OK) {
        c->sub = NULL;
        rl_log(RL_LOG_WARN, "cannot bind to the durable consumer", "{s:s,s:s,s:s,s:s}", "stream",
               c->stream, "durable", c->durable, "status", natsStatus_GetText(s), "detail",
               nats_GetLastError(NULL));
        return false;
    }
    c->bound_gen = gen;
    atomic_store(&c->bound, true);
    rl_log(RL_LOG_INFO, "consumer bound", "{s:s,s:s,s:i,s:i}", "stream", c->stream, "durable",
           c->durable, "batch_size", c->batch_size, "ack_wait_ms", (int)c->ack_wait_ms);
    return true;
}

static void poll_lag(tw_consumer_t *c, bool force)
{
    int64_t now = mono_ms();
    if (!atomic_load(&c->bound) || (!force && now - c->lag_at < LAG_POLL_MS))
        return;
    c->lag_at = now;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, rl_bus_js(c->bus), c->stream, c->durable, &jo, &jerr) == NATS_OK) {
        rl_gauge_set(c->pending, (double)ci->NumPending);
        rl_gauge_set(c->ack_pending, (double)ci->NumAckPending);
        jsConsumerInfo_Destroy(ci);
    }
}

/* ---- writing a batch (writer thread) ------------------------------------------------------ */

static void each_msg(natsMsgList *list, natsStatus (*fn)(natsMsg *, jsOptions *))
{
    for (int i = 0; i < list->Count; i++)
        fn(list->Msgs[i], NULL);
}

static natsStatus nak(natsMsg *m, jsOptions *o)
{
    return natsMsg_Nak(m, o);
}

/* Gives the messages back for redelivery. */
static void give_back(tw_consumer_t *c, natsMsgList *list, const char *why)
{
    each_msg(list, nak);
    rl_log(RL_LOG_WARN, "batch given back unwritten", "{s:s,s:i,s:s}", "stream", c->stream,
           "messages", list->Count, "why", why);
}

/* Keeps AckWait from running out on every batch in hand, written or waiting. */
static void keep_alive(tw_consumer_t *c)
{
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SLOTS; i++)
        if (c->slots[i].state != SLOT_FREE && c->slots[i].state != SLOT_FETCHING)
            each_msg(&c->slots[i].list, natsMsg_InProgress);
    pthread_mutex_unlock(&c->lock);
}

/* Retries fn until it succeeds (true) or the consumer is stopping past its
 * drain bound (false: the batch was given back). */
static bool retry(tw_consumer_t *c, natsMsgList *list, const char *what,
                  rl_status_t (*fn)(tw_consumer_t *, void *), void *arg)
{
    long backoff = BACKOFF_MIN_MS;
    int64_t first = 0, logged = 0, touched = mono_ms();
    for (;;) {
        rl_status_t st = fn(c, arg);
        int64_t now = mono_ms();
        if (st == RL_OK) {
            if (first)
                rl_log(RL_LOG_INFO, "database writes resumed", "{s:s,s:s,s:i}", "stream", c->stream,
                       "what", what, "after_ms", (int)(now - first));
            return true;
        }
        rl_counter_add(c->retries, 1);
        if (!first || now - logged >= LOG_REPEAT_MS) {
            rl_log(RL_LOG_WARN, "database write failed; retrying the batch",
                   "{s:s,s:s,s:s,s:s,s:i}", "stream", c->stream, "what", what, "status",
                   rl_status_str(st), "detail", rl_error_last(), "messages", list->Count);
            logged = now;
        }
        if (!first)
            first = now;
        if (atomic_load(&c->stopping) && now >= atomic_load(&c->drain_until)) {
            give_back(c, list, "shutting down while the database is unavailable");
            return false;
        }
        if (now - touched >= c->ack_wait_ms / 3) {
            keep_alive(c);
            touched = now;
        }
        pause_ms(c, atomic_load(&c->stopping) ? (backoff < 200 ? backoff : 200) : backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

typedef struct {
    tw_batch_t *batch;
    tw_store_result_t res;
} write_arg_t;

static rl_status_t do_write(tw_consumer_t *c, void *arg)
{
    write_arg_t *w = arg;
    return tw_store_write(c->store, w->batch, &w->res);
}

typedef struct {
    tw_dead_letter_t *dl;
    size_t n;
} dead_arg_t;

static rl_status_t do_dead_letters(tw_consumer_t *c, void *arg)
{
    dead_arg_t *d = arg;
    return tw_store_dead_letters(c->store, d->dl, d->n);
}

static void log_dead(tw_consumer_t *c, const tw_item_t *it, const char *subject, uint64_t seq)
{
    int64_t now = mono_ms();
    if (now - c->dead_window_at >= 10000) {
        if (c->dead_logged > DEAD_LOGS_PER_WINDOW)
            rl_log(RL_LOG_WARN, "dead letters not logged", "{s:s,s:i}", "stream", c->stream,
                   "count", c->dead_logged - DEAD_LOGS_PER_WINDOW);
        c->dead_window_at = now;
        c->dead_logged = 0;
    }
    if (c->dead_logged++ < DEAD_LOGS_PER_WINDOW)
        rl_log(RL_LOG_WARN, "message dead-lettered", "{s:s,s:s,s:s,s:s,s:I}", "stream", c->stream,
               "reason", tw_reason_name(it->reason), "detail", it->detail, "subject",
               subject ? subject : "", "stream_seq", (json_int_t)seq);
}

/* Writes the dead items of the batch; false when given back on shutdown. */
static bool dead_letters(tw_consumer_t *c, tw_batch_t *b, natsMsgList *list)
{
    size_t n = tw_batch_count(b, TW_ITEM_DEAD);
    if (n == 0)
        return true;
    tw_dead_letter_t *dl = calloc(n, sizeof *dl);
    jsMsgMetaData **meta = calloc(n, sizeof *meta);
    char(*reasons)[TW_DETAIL_MAX + 32] = calloc(n, sizeof *reasons);
    if (!dl || !meta || !reasons) {
        free(dl);
        free(meta);
        free(reasons);
        give_back(c, list, "out of memory");
        return false;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n && k < n; i++) {
        const tw_item_t *it = &b->items[i];
        if (it->state != TW_ITEM_DEAD)
            continue;
        natsMsg *m = it->ref;
        tw_dead_letter_t *d = &dl[k];
        if (natsMsg_GetMetaData(&meta[k], m) == NATS_OK) {
            d->stream = meta[k]->Stream;
            d->stream_seq = meta[k]->Sequence.Stream;
        }
        const char *id = NULL;
        if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK)
            d->msg_id = id;
        d->subject = natsMsg_GetSubject(m);
        d->tenant = it->has_tenant ? it->tenant : NULL;
        d->payload = it->data;
        d->len = it->len;
        snprintf(reasons[k], sizeof reasons[k], "%s: %s", tw_reason_name(it->reason), it->detail);
        d->reason = reasons[k];
        log_dead(c, it, d->subject, d->stream_seq);
        k++;
    }
    dead_arg_t arg = {dl, k};
    bool ok = retry(c, list, "dead letters", do_dead_letters, &arg);
    for (size_t i = 0; i < k; i++)
        jsMsgMetaData_Destroy(meta[i]);
    free(dl);
    free(meta);
    free(reasons);
    return ok;
}

/* Writes, dead-letters and acks one batch. */
static void write_batch(tw_consumer_t *c, slot_t *slot)
{
    int64_t t0 = mono_ms();
    tw_batch_t *b = &slot->batch;
    natsMsgList *list = &slot->list;
    write_arg_t w = {.batch = b};
    if (!retry(c, list, "rows", do_write, &w) || !dead_letters(c, b, list))
        return;
    for (int i = 0; i < list->Count; i++)
        natsMsg_Ack(list->Msgs[i], NULL);

    rl_counter_add(c->written, tw_batch_count(b, TW_ITEM_ROWS));
    rl_counter_add(c->batches, 1);
    for (size_t i = 0; i < b->n; i++) {
        const tw_item_t *it = &b->items[i];
        if (it->state == TW_ITEM_DEAD)
            rl_counter_add(c->dead[it->reason], 1);
        else if (it->state == TW_ITEM_DROPPED)
            rl_counter_add(c->dropped, 1);
    }
    rl_histogram_observe(c->batch_messages, (double)list->Count);
    rl_histogram_observe(c->batch_seconds, (double)(mono_ms() - t0) / 1000.0);
    if (w.res.partitions_created > 0)
        rl_log(RL_LOG_INFO, "partitions created for a batch", "{s:s,s:i}", "stream", c->stream,
               "created", w.res.partitions_created);
    if (rl_log_enabled(RL_LOG_TRACE))
        rl_log(RL_LOG_TRACE, "batch written", "{s:s,s:i,s:i,s:i,s:i}", "stream", c->stream,
               "messages", list->Count, "inserted", (int)w.res.inserted[TW_TABLE_MAIN],
               "transactions", w.res.transactions, "ms", (int)(mono_ms() - t0));

    rl_status_t st = tw_store_touch_keys(c->store, b);
    if (st != RL_OK)
        rl_log(RL_LOG_DEBUG, "api key last_used_at not updated", "{s:s,s:s}", "status",
               rl_status_str(st), "detail", rl_error_last());
}

/* The oldest slot in state from, moved to state to; NULL once *upstream_done
 * and none is left. Waits otherwise. Called with the lock held. */
static slot_t *take(tw_consumer_t *c, int from, int to, const bool *upstream_done)
{
    for (;;) {
        slot_t *next = NULL;
        for (int i = 0; i < SLOTS; i++)
            if (c->slots[i].state == from && (!next || c->slots[i].seq < next->seq))
                next = &c->slots[i];
        if (next) {
            next->state = to;
            return next;
        }
        if (*upstream_done)
            return NULL;
        pthread_cond_wait(&c->cond, &c->lock);
    }
}

static void put(tw_consumer_t *c, slot_t *slot, int state)
{
    pthread_mutex_lock(&c->lock);
    slot->state = state;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void *writer_main(void *arg)
{
    tw_consumer_t *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        slot_t *slot = take(c, SLOT_READY, SLOT_WRITING, &c->encoder_done);
        pthread_mutex_unlock(&c->lock);
        if (!slot)
            return NULL;
        write_batch(c, slot);
        natsMsgList_Destroy(&slot->list);
        memset(&slot->list, 0, sizeof slot->list);
        put(c, slot, SLOT_FREE);
    }
}

/* ---- encoding (encoder thread) --------------------------------------------------------------- */

/* Turns the fetched messages into rows; false (messages given back) on failure. */
static bool encode(tw_consumer_t *c, slot_t *slot)
{
    tw_limits_t lim = {.now_us = wall_us(), .retention_days = c->retention_days};
    tw_batch_reset(&slot->batch);
    for (int i = 0; i < slot->list.Count; i++) {
        natsMsg *m = slot->list.Msgs[i];
        rl_status_t st = tw_batch_add_message(&slot->batch, natsMsg_GetData(m),
                                              (size_t)natsMsg_GetDataLength(m), &lim, m, NULL);
        if (st != RL_OK) { /* out of memory or past a bound: let another try */
            rl_log(RL_LOG_ERROR, "cannot encode the batch", "{s:s,s:s,s:s}", "stream", c->stream,
                   "status", rl_status_str(st), "detail", rl_error_last());
            give_back(c, &slot->list, "encoding failed");
            return false;
        }
    }
    return true;
}

static void *encoder_main(void *arg)
{
    tw_consumer_t *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        slot_t *slot = take(c, SLOT_FETCHED, SLOT_ENCODING, &c->fetcher_done);
        if (!slot) {
            c->encoder_done = true;
            pthread_cond_broadcast(&c->cond);
            pthread_mutex_unlock(&c->lock);
            return NULL;
        }
        pthread_mutex_unlock(&c->lock);
        if (encode(c, slot)) {
            put(c, slot, SLOT_READY);
        } else {
            natsMsgList_Destroy(&slot->list);
            memset(&slot->list, 0, sizeof slot->list);
            put(c, slot, SLOT_FREE);
        }
    }
}

/* ---- fetching (fetcher thread) --------------------------------------------------------------- */

/* A free slot, marked FETCHING; NULL when stopping. Polls the lag while waiting
 * (the writer may be retrying a batch for a long time). */
static slot_t *take_free_slot(tw_consumer_t *c)
{
    for (;;) {
        pthread_mutex_lock(&c->lock);
        slot_t *free_slot = NULL;
        for (int i = 0; i < SLOTS && !free_slot; i++)
            if (c->slots[i].state == SLOT_FREE)
                free_slot = &c->slots[i];
        if (!free_slot && !atomic_load(&c->stopping)) {
            struct timespec until = rl_cond_deadline(LAG_POLL_MS);
            pthread_cond_timedwait(&c->cond, &c->lock, &until);
        }
        bool stop = atomic_load(&c->stopping);
        if (free_slot && !stop) {
            free_slot->state = SLOT_FETCHING;
            free_slot->seq = ++c->fills;
        }
        pthread_mutex_unlock(&c->lock);
        if (stop)
            return NULL;
        if (free_slot)
            return free_slot;
        poll_lag(c, false);
    }
}

static void *fetcher_main(void *arg)
{
    tw_consumer_t *c = arg;
    long backoff = BACKOFF_MIN_MS;
    int64_t fetch_logged = 0;
    while (!atomic_load(&c->stopping)) {
        if (c->sub && bus_generation(c) != c->bound_gen)
            unbind(c); /* reconnected: ensure the consumer again */
        if (!c->sub) {
            if (!bind(c)) {
                pause_ms(c, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = BACKOFF_MIN_MS;
            poll_lag(c, true);
        }
        poll_lag(c, false);
        /* libnats 3.4.1 miscounts a fetch that starts with more than half a batch
         * of messages already queued on the subscription: it returns more than the
         * batch, written past its own array. no_wait requests end on the server's
         * own terminator, so normally nothing but a stray status message is queued;
         * should more be, drop the subscription: those messages are redelivered
         * after AckWait. */
        int queued = 0;
        if (natsSubscription_GetPending(c->sub, &queued, NULL) == NATS_OK &&
            queued > c->batch_size / 2) {
            rl_log(RL_LOG_WARN, "messages queued outside a fetch; binding again", "{s:s,s:i}",
                   "stream", c->stream, "queued", queued);
            unbind(c);
            continue;
        }
        slot_t *slot = take_free_slot(c);
        if (!slot)
            break;

        jsFetchRequest req;
        jsFetchRequest_Init(&req);
        req.Batch = c->batch_size;
        req.NoWait = true; /* what is there now, up to a batch; waiting is ours */
        req.Expires = (int64_t)FETCH_TIMEOUT_MS * 1000000;
        /* bounded in bytes too: a message may carry many traces (docs/bus.md),
         * and a batch of ~batch_size traces is what the writer is tuned for */
        req.MaxBytes = (int64_t)c->batch_size * FETCH_BYTES_PER_ITEM < FETCH_MAX_BYTES
                           ? (int64_t)c->batch_size * FETCH_BYTES_PER_ITEM
                           : FETCH_MAX_BYTES;
        memset(&slot->list, 0, sizeof slot->list);
        natsStatus s = natsSubscription_FetchRequest(&slot->list, c->sub, &req);
        if (s == NATS_ERR && slot->list.Count == 0 && strstr(nats_GetLastError(NULL), "MaxBytes")) {
            /* one message larger than a batch's bytes: take it alone */
            jsFetchRequest_Init(&req);
            req.Batch = 1;
            req.NoWait = true;
            req.Expires = (int64_t)FETCH_TIMEOUT_MS * 1000000;
            s = natsSubscription_FetchRequest(&slot->list, c->sub, &req);
        }
        if (slot->list.Count > 0) {
            put(c, slot, SLOT_FETCHED);
            continue;
        }
        put(c, slot, SLOT_FREE);
        if (s == NATS_OK || s == NATS_NOT_FOUND || s == NATS_TIMEOUT) {
            pause_ms(c, c->batch_wait_ms); /* nothing now: look again shortly */
            continue;
        }
        if (s == NATS_ERR && strstr(nats_GetLastError(NULL), "MaxAckPending")) {
            pause_ms(c, c->batch_wait_ms); /* other replicas hold the consumer's window */
            continue;
        }
        rl_counter_add(c->fetch_errors, 1);
        int64_t now = mono_ms();
        if (now - fetch_logged >= LOG_REPEAT_MS) {
            rl_log(RL_LOG_WARN, "fetch failed; binding again", "{s:s,s:s,s:s}", "stream", c->stream,
                   "status", natsStatus_GetText(s), "detail", nats_GetLastError(NULL));
            fetch_logged = now;
        }
        unbind(c);
        pause_ms(c, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    /* the encoder and the writer finish what was fetched, then end */
    pthread_mutex_lock(&c->lock);
    c->fetcher_done = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    unbind(c);
    natsConnection *nc = rl_bus_conn(c->bus);
    if (nc && rl_bus_is_connected(c->bus))
        natsConnection_FlushTimeout(nc, 2000); /* the acks of the last batches */
    return NULL;
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static void register_metrics(tw_consumer_t *c, rl_metrics_t *m)
{
    char labels[64];
    snprintf(labels, sizeof labels, "stream=\"%s\"", c->label);
    rl_metrics_counter(m, "renlayer_trace_writer_messages_written_total",
                       "Traces or decisions (lines of bus messages) whose rows were committed, redeliveries included", labels,
                       &c->written);
    rl_metrics_counter(m, "renlayer_trace_writer_messages_dropped_total",
                       "Traces or decisions acked unwritten: their day is past retention", labels,
                       &c->dropped);
    rl_metrics_counter(m, "renlayer_trace_writer_batches_total", "Batches written and acked",
                       labels, &c->batches);
    rl_metrics_counter(m, "renlayer_trace_writer_fetch_errors_total",
                       "Failed fetches from the durable consumer", labels, &c->fetch_errors);
    rl_metrics_counter(m, "renlayer_trace_writer_write_retries_total",
                       "Batch writes retried after a database failure", labels, &c->retries);
    rl_metrics_histogram(
        m, "renlayer_trace_writer_batch_seconds", "Time to write, dead-letter and ack a batch",
        labels, RL_BUCKETS_LATENCY_SECONDS, RL_BUCKETS_LATENCY_SECONDS_N, &c->batch_seconds);
    rl_metrics_histogram(m, "renlayer_trace_writer_batch_messages", "Bus messages per batch", labels,
                         BATCH_SIZE_BUCKETS, sizeof BATCH_SIZE_BUCKETS / sizeof *BATCH_SIZE_BUCKETS,
                         &c->batch_messages);
    rl_metrics_gauge(m, "renlayer_trace_writer_consumer_pending",
                     "Messages of the stream not yet delivered to the durable consumer", labels,
                     &c->pending);
    rl_metrics_gauge(m, "renlayer_trace_writer_consumer_ack_pending",
                     "Messages delivered to the durable consumer and not yet acked", labels,
                     &c->ack_pending);
    for (int r = TW_REASON_INVALID_JSON; r < TW_REASON_COUNT; r++) {
        if (r == TW_REASON_PAST_RETENTION)
            continue;
        char rl[64];
        snprintf(rl, sizeof rl, "reason=\"%s\"", tw_reason_name((tw_reason_t)r));
        rl_metrics_counter(m, "renlayer_trace_writer_dead_letters_total",
                           "Traces or decisions written to renlayer.dead_letters, by reason", rl, &c->dead[r]);
    }
}

static void consumer_free(tw_consumer_t *c)
{
    for (int i = 0; i < SLOTS; i++)
        tw_batch_free(&c->slots[i].batch);
    tw_store_destroy(c->store);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

rl_status_t tw_consumer_start(const tw_consumer_options_t *o, tw_consumer_t **out)
{
    if (!o || !o->bus || !o->database_url || !out || o->batch_size < 1 || o->batch_size > 10000 ||
        o->batch_wait_ms < 1 || o->ack_wait_ms < 1000 || o->max_ack_pending < o->batch_size ||
        o->retention_days < 1)
        return rl_error(RL_ERR_INVALID, "tw_consumer_start: bad options");
    tw_consumer_t *c = calloc(1, sizeof *c);
    if (!c)
        return rl_error(RL_ERR_NOMEM, "tw_consumer_start");
    c->bus = o->bus;
    c->kind = o->kind;
    c->stream = o->kind == TW_KIND_TRACE ? RL_BUS_STREAM_TRACES : RL_BUS_STREAM_DECISIONS;
    c->filter = o->kind == TW_KIND_TRACE ? "renlayer.traces.>" : "renlayer.decisions.>";
    c->label = o->kind == TW_KIND_TRACE ? "traces" : "decisions";
    c->durable = tw_consumer_durable(o->kind);
    c->batch_size = o->batch_size;
    c->batch_wait_ms = o->batch_wait_ms;
    c->ack_wait_ms = o->ack_wait_ms;
    c->max_ack_pending = o->max_ack_pending;
    c->retention_days = o->retention_days;
    c->drain_ms = o->drain_ms;
    pthread_mutex_init(&c->lock, NULL);
    rl_cond_init(&c->cond);

    tw_store_options_t so = {.database_url = o->database_url,
                             .application_name = o->application_name,
                             .retention_days = o->retention_days,
                             .metrics = o->metrics};
    rl_status_t st = tw_store_create(&so, &c->store);
    for (int i = 0; st == RL_OK && i < SLOTS; i++)
        st = tw_batch_init(&c->slots[i].batch, o->kind, (size_t)o->batch_size, ROWS_MAX);
    if (st != RL_OK) {
        consumer_free(c);
        return st;
    }
    if (o->metrics)
        register_metrics(c, o->metrics);
    int started = 0;
    void *(*mains[3])(void *) = {writer_main, encoder_main, fetcher_main};
    pthread_t *threads[3] = {&c->writer, &c->encoder, &c->fetcher};
    while (started < 3 && pthread_create(threads[started], NULL, mains[started], c) == 0)
        started++;
    if (started < 3) {
        pthread_mutex_lock(&c->lock);
        c->fetcher_done = c->encoder_done = true; /* the threads that run end at once */
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < started; i++)
            pthread_join(*threads[i], NULL);
        consumer_free(c);
        return rl_error(RL_ERR_IO, "tw_consumer_start: threads");
    }
    *out = c;
    return RL_OK;
}

bool tw_consumer_bound(tw_consumer_t *c)
{
    return c && atomic_load(&c->bound);
}

void tw_consumer_stop(tw_consumer_t *c)
{
    if (!c || atomic_load(&c->stopping))
        return;
    atomic_store(&c->drain_until, mono_ms() + c->drain_ms);
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stopping, true);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

void tw_consumer_destroy(tw_consumer_t *c)
{
    if (!c)
        return;
    tw_consumer_stop(c);
    pthread_join(c->fetcher, NULL);
    pthread_join(c->encoder, NULL);
    pthread_join(c->writer, NULL);
    consumer_free(c);
}

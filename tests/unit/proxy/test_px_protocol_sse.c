/* Tests of px_sse, the SSE framer under px_protocol's response parser:
 * fields and line endings per the WHATWG rules, events handed over whole
 * whatever the chunking, dropping, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_sse.h"

#define MAX_SEEN 32

typedef struct {
    size_t n;
    char event[MAX_SEEN][64];
    char data[MAX_SEEN][256];
    bool has_data[MAX_SEEN];
    size_t raw_len[MAX_SEEN];
    const char *drop_if; /* events whose data holds this are dropped */
} seen_t;

static bool collect(void *ctx, const px_sse_event_t *ev)
{
    seen_t *s = ctx;
    if (s->n < MAX_SEEN) {
        snprintf(s->event[s->n], sizeof s->event[0], "%.*s", (int)ev->event_len,
                 ev->event ? ev->event : "");
        snprintf(s->data[s->n], sizeof s->data[0], "%.*s", (int)ev->data_len,
                 ev->data ? ev->data : "");
        s->has_data[s->n] = ev->data != NULL;
        s->raw_len[s->n] = ev->raw_len;
        s->n++;
    }
    return !(s->drop_if && ev->data &&
             memmem(ev->data, ev->data_len, s->drop_if, strlen(s->drop_if)));
}

/* Feeds text in pieces of step bytes (0: whole). */
static void feed(const char *text, size_t len, size_t step, size_t max_event, seen_t *seen,
                 rl_buf_t *fwd)
{
    px_sse_t *p;
    assert_int_equal(px_sse_create(max_event, collect, seen, &p), RL_OK);
    rl_buf_init(fwd, 1 << 24);
    for (size_t off = 0; off < len;) {
        size_t n = step == 0 || step > len - off ? len - off : step;
        assert_int_equal(px_sse_feed(p, text + off, n, fwd), RL_OK);
        off += n;
    }
    assert_int_equal(px_sse_finish(p, fwd), RL_OK);
    px_sse_destroy(p);
}

static void fields_per_the_spec(void **state)
{
    (void)state;
    static const char text[] = "data: plain\n\n"
                               "event: add\ndata:no-space\ndata:  two spaces\n\n"
                               ": comment only\n\n"
                               "data\n\n"
                               "id: 1\nretry: 5\nunknown: x\n\n"
                               "data: a:b:c\revent:last\r\r"
                               "data: crlf\r\n\r\n"
                               "data: tail";
    for (size_t step = 0; step < 8; step++) {
        seen_t s = {0};
        rl_buf_t fwd;
        feed(text, strlen(text), step, 1024, &s, &fwd);
        assert_string_equal(fwd.data, text);
        assert_int_equal(s.n, 8);
        assert_string_equal(s.data[0], "plain");
        assert_string_equal(s.event[1], "add");
        assert_string_equal(s.data[1], "no-space\n two spaces");
        assert_false(s.has_data[2]);
        assert_true(s.has_data[3]); /* "data" alone: an empty data line */
        assert_string_equal(s.data[3], "");
        assert_false(s.has_data[4]);
        assert_string_equal(s.data[5], "a:b:c");
        assert_string_equal(s.event[5], "last");
        assert_string_equal(s.data[6], "crlf");
        /* Whole, the raw event ends with its CRLF; when the LF arrives in a
         * later piece, it follows the event (forwarded or dropped with it). */
        if (step == 0)
            assert_int_equal(s.raw_len[6], strlen("data: crlf\r\n\r\n"));
        assert_string_equal(s.data[7], "tail"); /* handed over at finish */
        rl_buf_free(&fwd);
    }
}

static void dropped_events_vanish_whole(void **state)
{
    (void)state;
    static const char text[] = "data: keep1\r\n\r\n"
                               "data: drop\r\n\r\n"
                               "data: keep2\r\n\r\n"
                               "data: drop again\r\r"
                               "data: keep3\n\n"
                               "data: drop, the last one, without its blank line";
    static const char want[] = "data: keep1\r\n\r\n"
                               "data: keep2\r\n\r\n"
                               "data: keep3\n\n";
    for (size_t step = 0; step < 20; step++) {
        seen_t s = {.drop_if = "drop"};
        rl_buf_t fwd;
        feed(text, strlen(text), step, 1024, &s, &fwd);
        assert_string_equal(fwd.data, want);
        assert_int_equal(s.n, 6);
        rl_buf_free(&fwd);
    }
}

static void oversized_events_pass_unread(void **state)
{
    (void)state;
    char text[400];
    snprintf(text, sizeof text, "data: small\n\ndata: %0100d\n\ndata: after\n\ndata: %0100d", 7, 8);
    for (size_t step = 0; step < 12; step++) {
        seen_t s = {0};
        rl_buf_t fwd;
        px_sse_t *p;
        assert_int_equal(px_sse_create(64, collect, &s, &p), RL_OK);
        rl_buf_init(&fwd, 4096);
        for (size_t off = 0, len = strlen(text); off < len;) {
            size_t n = step == 0 || step > len - off ? len - off : step;
            assert_int_equal(px_sse_feed(p, text + off, n, &fwd), RL_OK);
            off += n;
        }
        assert_int_equal(px_sse_finish(p, &fwd), RL_OK);
        assert_string_equal(fwd.data, text);
        assert_int_equal(s.n, 2); /* only the small events were read */
        assert_string_equal(s.data[0], "small");
        assert_string_equal(s.data[1], "after");
        assert_int_equal(px_sse_events(p), 4);
        assert_int_equal(px_sse_oversized(p), 2);
        px_sse_destroy(p);
        rl_buf_free(&fwd);
    }
}

/* A callback that keeps every event's bytes itself (px_guard): it returns
 * false, and with px_sse_take_dropped the LF of a CRLF that arrives after
 * its event is forwarded, so raws and forwarded bytes, in order, are the
 * stream. */
typedef struct {
    rl_buf_t *order; /* every byte as it comes out, raws and forwarded */
    rl_buf_t *fwd;
    size_t fwd_seen;
} taker_t;

static bool take(void *ctx, const px_sse_event_t *ev)
{
    taker_t *t = ctx;
    rl_buf_append(t->order, t->fwd->data + t->fwd_seen, t->fwd->len - t->fwd_seen);
    t->fwd_seen = t->fwd->len;
    rl_buf_append(t->order, ev->raw, ev->raw_len);
    return false;
}

static void a_taker_gets_every_byte(void **state)
{
    (void)state;
    static const char text[] = "data: a\r\n\r\ndata: b\r\r\ndata: c\r\n\r\n: x\r\n\r\ndata: tail";
    for (size_t step = 0; step < 12; step++) {
        rl_buf_t fwd, order;
        rl_buf_init(&fwd, 4096);
        rl_buf_init(&order, 4096);
        taker_t t = {.order = &order, .fwd = &fwd};
        px_sse_t *p;
        assert_int_equal(px_sse_create(1024, take, &t, &p), RL_OK);
        px_sse_take_dropped(p);
        for (size_t off = 0, len = strlen(text); off < len;) {
            size_t n = step == 0 || step > len - off ? len - off : step;
            assert_int_equal(px_sse_feed(p, text + off, n, &fwd), RL_OK);
            off += n;
        }
        assert_int_equal(px_sse_finish(p, &fwd), RL_OK);
        rl_buf_append(&order, fwd.data + t.fwd_seen, fwd.len - t.fwd_seen);
        assert_string_equal(order.data, text);
        px_sse_destroy(p);
        rl_buf_free(&fwd);
        rl_buf_free(&order);
    }
}

static void no_callback_forwards_all(void **state)
{
    (void)state;
    px_sse_t *p;
    assert_int_equal(px_sse_create(16, NULL, NULL, &p), RL_OK);
    rl_buf_t fwd;
    rl_buf_init(&fwd, 1024);
    const char *t = "data: 1\n\ndata: 2";
    assert_int_equal(px_sse_feed(p, t, strlen(t), &fwd), RL_OK);
    assert_string_equal(fwd.data, "data: 1\n\n"); /* the second waits for its blank line */
    assert_int_equal(px_sse_finish(p, &fwd), RL_OK);
    assert_string_equal(fwd.data, t);
    rl_buf_free(&fwd);
    px_sse_destroy(p);
    px_sse_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_per_the_spec),
        cmocka_unit_test(dropped_events_vanish_whole),
        cmocka_unit_test(oversized_events_pass_unread),
        cmocka_unit_test(a_taker_gets_every_byte),
        cmocka_unit_test(no_callback_forwards_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

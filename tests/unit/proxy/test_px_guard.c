/* Tests of px_guard's DLP on streamed responses, driven as px_upstream
 * drives it (the response reader, then the guard, feed by feed): events that
 * end oddly, line ends split across reads, and events too large to parse,
 * whose bytes are scanned as a stream too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "px_internal.h"
#include "rl_dlp.h"

#define AWS_KEY "AKIAQ3EGV7TXBMJP4KRA" /* synthetic: the format, no account */
#define EMAIL "mia.wong@acme-widgets.com"
#define READ_BYTES 16384                           /* what libcurl hands over per read */
#define OVERSIZED_BYTES ((size_t)(3u << 19) + 100) /* 1.5 MiB: past the 1 MiB the guard parses */

typedef struct {
    rl_dlp_engine_t *dlp;
    px_engine_t engine;
    px_worker_t worker;
    px_tenant_t tenant;
    px_agent_t agent;
    px_request_t *req;
    px_response_t *parser;
} stream_t;

static void open_stream(stream_t *s, px_proto_t proto)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(rl_dlp_engine_create(NULL, &s->dlp), RL_OK);
    s->worker.engine = &s->engine;
    s->tenant.dlp = s->dlp;
    s->agent.tenant = &s->tenant;
    s->req = calloc(1, sizeof *s->req);
    assert_non_null(s->req);
    px_request_t *req = s->req;
    req->worker = &s->worker;
    req->agent = &s->agent;
    req->proto = proto;
    req->up_sse = true;
    req->status = PX_STATUS_ALLOWED;
    rl_buf_init(&req->out, 64u << 20);
    px_request_info_t info;
    px_request_info_reset(&info);
    info.proto = proto;
    info.action = PX_ACTION_CHAT;
    assert_int_equal(px_response_create(&info, 200, true, &s->parser), RL_OK);
    px_guard_response_start(req);
    assert_non_null(req->guard);
}

/* One read from the upstream; false once the guard cut the stream. */
static bool feed(stream_t *s, const char *data, size_t n)
{
    size_t before = s->req->out.len;
    assert_int_equal(px_response_feed(s->parser, data, n, &s->req->out), RL_OK);
    return px_guard_stream(s->req, before);
}

/* data in reads: the first of first bytes, then of step each; false once cut. */
static bool feed_reads(stream_t *s, const char *data, size_t len, size_t first, size_t step)
{
    bool go_on = true;
    for (size_t off = 0, n = first; go_on && off < len; off += n, n = step) {
        if (n > len - off)
            n = len - off;
        go_on = feed(s, data + off, n);
    }
    return go_on;
}

static void end_stream(stream_t *s)
{
    size_t before = s->req->out.len;
    assert_int_equal(px_response_finish(s->parser, &s->req->out), RL_OK);
    px_guard_response_end(s->req, before);
}

static void close_stream(stream_t *s)
{
    px_guard_free(s->req);
    px_response_destroy(s->parser);
    rl_buf_free(&s->req->out);
    free(s->req);
    rl_dlp_scratch_destroy(s->worker.dlp_scratch);
    rl_dlp_engine_release(s->dlp);
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void last_event_without_blank_line_once(void **state)
{
    (void)state;
    static const char *const tails[] = {"data: [DONE]\n", "data: [DONE]"};
    for (size_t i = 0; i < 2; i++) {
        stream_t s;
        open_stream(&s, PX_PROTO_OPENAI);
        const char *first =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        assert_true(feed(&s, first, strlen(first)));
        assert_true(feed(&s, tails[i], strlen(tails[i])));
        end_stream(&s);
        assert_false(s.req->dlp_cut);
        assert_int_equal(count_of(s.req->out.data, "[DONE]"), 1);
        assert_int_equal(s.req->out.len, strlen(first) + strlen(tails[i]));
        close_stream(&s);
    }
}

static void crlf_split_across_reads_kept(void **state)
{
    (void)state;
    static const char text[] =
        "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\","
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\r\n\r\n";
    for (size_t step = 1; step < 12; step++) {
        stream_t s;
        open_stream(&s, PX_PROTO_ANTHROPIC);
        assert_true(feed_reads(&s, text, strlen(text), step, step));
        end_stream(&s);
        assert_string_equal(s.req->out.data, text); /* nothing found: byte for byte */
        close_stream(&s);
    }
}

/* An event over the 1 MiB the guard parses, with `secret` at `at`, fed in
 * reads of READ_BYTES placed so that one ends `split` bytes into the secret.
 * Returns the client's bytes. */
static char *oversized(const char *secret, size_t at, size_t split, bool *cut)
{
    size_t size = OVERSIZED_BYTES;
    char *ev = malloc(size + 1);
    assert_non_null(ev);
    const char *head =
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\","
        "\"text\":\"";
    const char *tail = "\"}]}}\n\n";
    size_t hl = strlen(head), tl = strlen(tail);
    memcpy(ev, head, hl);
    for (size_t i = hl; i < size - tl; i++)
        ev[i] = "lorem ipsum dolor sit amet "[i % 27];
    memcpy(ev + at, secret, strlen(secret));
    memcpy(ev + size - tl, tail, tl);
    ev[size] = '\0';

    stream_t s;
    open_stream(&s, PX_PROTO_OPENAI);
    if (feed_reads(&s, ev, size, (at + split) % READ_BYTES, READ_BYTES))
        end_stream(&s);
    *cut = s.req->dlp_cut;
    char *out = strndup(s.req->out.data ? s.req->out.data : "", s.req->out.len);
    close_stream(&s);
    free(ev);
    return out;
}

static void oversized_event_key_split_across_reads_is_cut(void **state)
{
    (void)state;
    bool cut; /* past the first MiB, which is held and scanned in one piece */
    char *out = oversized(AWS_KEY, 1200000, 7, &cut);
    assert_true(cut);
    assert_null(strstr(out, AWS_KEY));
    assert_null(strstr(out, "AKIAQ3E"));
    assert_non_null(strstr(out, "dlp_blocked"));
    free(out);
}

static void oversized_event_email_split_across_reads_is_redacted(void **state)
{
    (void)state;
    bool cut;
    char *out = oversized(EMAIL, 1300000, 5, &cut);
    assert_false(cut);
    assert_null(strstr(out, EMAIL));
    assert_non_null(strstr(out, "[REDACTED:EMAIL]"));
    /* one marker for the whole match: the filler's letters on both sides
     * belong to it ("lore" + EMAIL + "rem"), as a one-shot scan finds */
    assert_int_equal(count_of(out, "[REDACTED:EMAIL]"), 1);
    assert_non_null(strstr(out, "amet [REDACTED:EMAIL] ipsum"));
    assert_int_equal(strlen(out),
                     OVERSIZED_BYTES - strlen("lore" EMAIL "rem") + strlen("[REDACTED:EMAIL]"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(last_event_without_blank_line_once),
        cmocka_unit_test(crlf_split_across_reads_kept),
        cmocka_unit_test(oversized_event_key_split_across_reads_is_cut),
        cmocka_unit_test(oversized_event_email_split_across_reads_is_redacted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

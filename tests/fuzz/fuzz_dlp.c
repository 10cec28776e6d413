/* Fuzzes the DLP engine: a one-shot scan against a stream fed the same text
 * in random pieces, on three engines (the built-ins as shipped; every
 * built-in redacting; custom rules with a lookbehind, a block rule and a
 * redact rule beside the built-ins).
 *
 * Input: [engine][chunk seed][text...].
 * Properties (rl_dlp.h's promises): findings lie inside the text, sorted by
 * start then longest first; the stream reports exactly the one-shot scan's
 * findings, each once, and never releases a byte it must still redact: what
 * it releases, redacted, equals rl_dlp_redact over the whole text. */
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "rl_dlp.h"

#define NENGINES 3
static rl_dlp_engine_t *engines[NENGINES];
static rl_dlp_scratch_t *scratch;

static rl_dlp_engine_t *build(int which)
{
    rl_dlp_config_t *cfg;
    FUZZ_CHECK(rl_dlp_config_create(&cfg) == RL_OK, "config");
    if (which == 1)
        for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++)
            FUZZ_CHECK(rl_dlp_config_set_builtin(cfg, (rl_dlp_builtin_t)d, true, 0,
                                                 RL_DLP_ACTION_REDACT) == RL_OK,
                       "override");
    if (which == 2) {
        const rl_dlp_rule_t rules[] = {
            {"tok", "tokens", "tok_[A-Za-z0-9]{8,40}", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT,
             RL_DLP_SCOPE_BOTH, true},
            {"conf", "confidential", "(?i)\\bconfidential\\b", RL_DLP_SEVERITY_MEDIUM,
             RL_DLP_ACTION_BLOCK, RL_DLP_SCOPE_RESPONSE, true},
            {"after-id", "ids", "(?<=id=)\\d{6}", RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_REDACT,
             RL_DLP_SCOPE_BOTH, true},
            {"word", "repeated", "(\\w+) \\1", RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_WARN,
             RL_DLP_SCOPE_BOTH, true},
        };
        for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
            FUZZ_CHECK(rl_dlp_config_add_rule(cfg, &rules[i]) == RL_OK, "rule %s", rules[i].id);
    }
    rl_dlp_engine_t *e;
    FUZZ_CHECK(rl_dlp_engine_create(cfg, &e) == RL_OK, "engine");
    rl_dlp_config_destroy(cfg);
    return e;
}

static bool same_finding(const rl_dlp_finding_t *a, const rl_dlp_finding_t *b)
{
    return a->start == b->start && a->end == b->end && strcmp(a->detector, b->detector) == 0 &&
           a->severity == b->severity && a->action == b->action;
}

/* Orders a stream's findings as a one-shot scan does (start, longest first). */
static int by_position(const void *x, const void *y)
{
    const rl_dlp_finding_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return strcmp(a->detector, b->detector);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (scratch == NULL) {
        for (int i = 0; i < NENGINES; i++)
            engines[i] = build(i);
        FUZZ_CHECK(rl_dlp_scratch_create(&scratch) == RL_OK, "scratch");
    }
    fuzz_input_t in = {data, size};
    rl_dlp_engine_t *e = engines[fuzz_byte(&in) % NENGINES];
    uint8_t seed = fuzz_byte(&in);
    const char *text = (const char *)in.p;
    size_t len = in.n;

    rl_dlp_findings_t whole;
    rl_dlp_findings_init(&whole, 1u << 16);
    rl_status_t st = rl_dlp_scan(e, RL_DLP_SCOPE_RESPONSE, text, len, scratch, &whole);
    FUZZ_CHECK(st == RL_OK, "scan: status %d", (int)st);
    for (size_t i = 0; i < whole.len; i++) {
        const rl_dlp_finding_t *f = &whole.items[i];
        FUZZ_CHECK(f->start < f->end && f->end <= len, "finding %zu at [%zu, %zu) of %zu", i,
                   f->start, f->end, len);
        if (i > 0)
            FUZZ_CHECK(by_position(&whole.items[i - 1], f) <= 0 ||
                           whole.items[i - 1].start == f->start,
                       "findings out of order at %zu", i);
    }
    rl_buf_t expected;
    rl_buf_init(&expected, 16u << 20);
    FUZZ_CHECK(rl_dlp_redact(text, len, 0, &whole, &expected) == RL_OK, "redact");

    rl_dlp_stream_t *s;
    FUZZ_CHECK(rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s) == RL_OK, "stream");
    rl_dlp_findings_t found;
    rl_dlp_findings_init(&found, 1u << 16);
    rl_buf_t released;
    rl_buf_init(&released, 16u << 20);
    fuzz_chunks_t chunks;
    fuzz_chunks_init(&chunks, seed, 1 + seed % 97);
    for (size_t at = 0; at < len;) {
        size_t n = fuzz_chunk(&chunks, len - at);
        FUZZ_CHECK(rl_dlp_stream_feed(s, text + at, n, scratch, &found) == RL_OK, "feed");
        at += n;
        FUZZ_CHECK(rl_dlp_stream_safe(s) <= at, "safe %zu past the %zu bytes fed",
                   rl_dlp_stream_safe(s), at);
        FUZZ_CHECK(rl_dlp_stream_release(s, &released) == RL_OK, "release");
    }
    FUZZ_CHECK(rl_dlp_stream_finish(s, scratch, &found) == RL_OK, "finish");
    FUZZ_CHECK(rl_dlp_stream_safe(s) == len, "not everything safe after finish");
    FUZZ_CHECK(rl_dlp_stream_release(s, &released) == RL_OK, "last release");
    rl_dlp_stream_destroy(s);

    if (found.len > 1)
        qsort(found.items, found.len, sizeof *found.items, by_position);
    if (whole.len > 1)
        qsort(whole.items, whole.len, sizeof *whole.items, by_position);
    FUZZ_CHECK(found.len == whole.len, "stream found %zu, scan %zu", found.len, whole.len);
    for (size_t i = 0; i < whole.len; i++)
        FUZZ_CHECK(same_finding(&found.items[i], &whole.items[i]),
                   "finding %zu: stream %s [%zu, %zu), scan %s [%zu, %zu)", i,
                   found.items[i].detector, found.items[i].start, found.items[i].end,
                   whole.items[i].detector, whole.items[i].start, whole.items[i].end);
    FUZZ_CHECK(fuzz_same_bytes(released.data, released.len, expected.data, expected.len),
               "released text differs from the one-shot redaction (%zu vs %zu bytes)", released.len,
               expected.len);

    rl_buf_free(&released);
    rl_buf_free(&expected);
    rl_dlp_findings_free(&found);
    rl_dlp_findings_free(&whole);
    return 0;
}

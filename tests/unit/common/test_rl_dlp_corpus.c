/* Scores the DLP engine (every built-in on, defaults) against the labelled
 * corpus tests/fixtures/dlp/corpus.jsonl: precision and recall per detector,
 * printed as a table; fails when either drops below 0.95 for any detector.
 * A finding counts when detector and byte span equal a label's; SOURCE_CODE
 * labels are regions (the whole snippet): any SOURCE_CODE finding inside
 * one is a hit, one outside every region a false positive.
 * RL_DLP_CORPUS overrides the corpus path; RL_DLP_CORPUS_VERBOSE=1 lists
 * each miss and false positive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_dlp.h"

#define MAX_LABELS 64

typedef struct {
    size_t tp, fp, fn;
} score_t;

static const char *corpus_path(char *buf, size_t cap)
{
    const char *env = getenv("RL_DLP_CORPUS");
    if (env != NULL && env[0] != '\0')
        return env;
    /* __FILE__ is tests/unit/common/test_rl_dlp_corpus.c, absolute under CMake */
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/common/");
    size_t n = cut ? (size_t)(cut - f) : 0;
    snprintf(buf, cap, "%.*stests/fixtures/dlp/corpus.jsonl", (int)n, f);
    return buf;
}

static int detector_index(const char *id)
{
    rl_dlp_builtin_t d;
    if (rl_dlp_builtin_parse(id, &d) != RL_OK)
        return -1;
    return (int)d;
}

static void corpus_precision_recall(void **state)
{
    (void)state;
    char pbuf[4096];
    const char *path = corpus_path(pbuf, sizeof pbuf);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("cannot open corpus %s", path);
    bool verbose = getenv("RL_DLP_CORPUS_VERBOSE") != NULL;

    rl_dlp_engine_t *e;
    assert_int_equal(rl_dlp_engine_create(NULL, &e), RL_OK);
    rl_dlp_scratch_t *sc;
    assert_int_equal(rl_dlp_scratch_create(&sc), RL_OK);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 1024);

    score_t score[RL_DLP_BUILTIN_COUNT] = {{0}};
    size_t docs = 0, labels_total = 0, bytes = 0, clean_docs = 0, clean_flagged = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, fp)) > 0) {
        json_error_t jerr;
        json_t *rec = json_loadb(line, (size_t)got, 0, &jerr);
        if (rec == NULL)
            fail_msg("corpus line %zu: %s", docs + 1, jerr.text);
        const char *id = json_string_value(json_object_get(rec, "id"));
        json_t *jt = json_object_get(rec, "text");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt);
        json_t *jl = json_object_get(rec, "findings");
        assert_non_null(text);
        assert_true(json_array_size(jl) <= MAX_LABELS);
        docs++;
        bytes += len;

        struct {
            int det;
            size_t start, end;
            bool hit;
        } lab[MAX_LABELS];
        size_t nl = 0;
        size_t i;
        json_t *x;
        json_array_foreach(jl, i, x)
        {
            const char *det = json_string_value(json_object_get(x, "detector"));
            size_t s = (size_t)json_integer_value(json_object_get(x, "start"));
            size_t en = (size_t)json_integer_value(json_object_get(x, "end"));
            const char *m = json_string_value(json_object_get(x, "match"));
            int d = detector_index(det);
            if (d < 0)
                fail_msg("%s: unknown detector %s", id, det);
            /* the corpus checks itself: the label's offsets hold its match */
            if (!(en <= len && s < en && strlen(m) == en - s && memcmp(text + s, m, en - s) == 0))
                fail_msg("%s: label %s [%zu,%zu) does not match its text", id, det, s, en);
            lab[nl].det = d;
            lab[nl].start = s;
            lab[nl].end = en;
            lab[nl].hit = false;
            nl++;
        }
        labels_total += nl;
        if (nl == 0)
            clean_docs++;

        rl_status_t st = rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, len, sc, &f);
        if (st != RL_OK)
            fail_msg("%s: scan failed: %s %s", id, rl_status_str(st), rl_error_last());
        if (nl == 0 && f.len > 0)
            clean_flagged++;
        for (size_t k = 0; k < f.len; k++) {
            const rl_dlp_finding_t *g = &f.items[k];
            assert_true(g->builtin >= 0);
            bool region = g->builtin == RL_DLP_SOURCE_CODE;
            bool ok = false;
            for (size_t j = 0; j < nl; j++) {
                if (lab[j].det != g->builtin)
                    continue;
                bool match = region ? (g->start < lab[j].end && lab[j].start < g->end)
                                    : (g->start == lab[j].start && g->end == lab[j].end);
                if (match) {
                    ok = true;
                    if (!lab[j].hit) {
                        lab[j].hit = true;
                        score[g->builtin].tp++;
                    }
                }
            }
            if (!ok) {
                score[g->builtin].fp++;
                if (verbose)
                    printf("FP %s %s [%zu,%zu) %.*s\n", id, g->detector, g->start, g->end,
                           (int)(g->end - g->start), text + g->start);
            }
        }
        for (size_t j = 0; j < nl; j++)
            if (!lab[j].hit) {
                score[lab[j].det].fn++;
                if (verbose)
                    printf("FN %s %s [%zu,%zu) %.*s\n", id, rl_dlp_builtin_id(lab[j].det),
                           lab[j].start, lab[j].end, (int)(lab[j].end - lab[j].start),
                           text + lab[j].start);
            }
        json_decref(rec);
    }
    free(line);
    fclose(fp);

    printf("DLP corpus: %zu documents (%zu bytes), %zu labelled findings, %zu documents "
           "without any (%zu of them flagged)\n",
           docs, bytes, labels_total, clean_docs, clean_flagged);
    printf("%-16s %6s %5s %5s %5s %9s %7s\n", "detector", "labels", "tp", "fp", "fn", "precision",
           "recall");
    bool ok = docs > 0;
    for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++) {
        score_t *s = &score[d];
        size_t labels = s->tp + s->fn;
        double p = s->tp + s->fp ? (double)s->tp / (double)(s->tp + s->fp) : 1.0;
        double r = labels ? (double)s->tp / (double)labels : 0.0;
        bool good = p >= 0.95 && r >= 0.95 && labels >= 20;
        printf("%-16s %6zu %5zu %5zu %5zu %9.3f %7.3f%s\n", rl_dlp_builtin_id(d), labels, s->tp,
               s->fp, s->fn, p, r, good ? "" : "  <-- below 0.95 (or < 20 labels)");
        ok = ok && good;
    }
    rl_dlp_findings_free(&f);
    rl_dlp_scratch_destroy(sc);
    rl_dlp_engine_release(e);
    assert_true(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(corpus_precision_recall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

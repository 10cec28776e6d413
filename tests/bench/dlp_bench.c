/* DLP engine throughput on one core: every built-in on, realistic 4 KB
 * prompts (chat JSON bodies: prose, a code block, a few PII values and one
 * key among them, and clean ones), scanned with rl_dlp_scan. Prints MB/s
 * with a per-thread scratch, with a scratch made per call, and streaming in
 * 256-byte chunks; then one line "dlp_scan_mb_s <n>" for scripts.
 *
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Ilibs/common tests/bench/dlp_bench.c \
 *       libs/common/rl_dlp*.c libs/common/rl_status.c libs/common/rl_buf.c \
 *       libs/common/rl_crypto.c $(pkg-config --cflags --libs libpcre2-8 jansson openssl) \
 *       -lm -lpthread -o /tmp/dlp_bench && /tmp/dlp_bench [seconds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rl_dlp.h"

#define PROMPT_SIZE 4096
#define NPROMPTS 16

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID,
                  &t); /* CPU time: other load on the machine does not count */
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static const char *const prose[] = {
    "Can you summarise the meeting notes below and list the action items? ",
    "The quarterly numbers look good overall; revenue grew 12% in EMEA and 8% in APAC. ",
    "We agreed to move the launch to March 14 because the payment provider needs two more "
    "weeks for the certification. ",
    "Olivia will follow up with the legal team about the data processing agreement. ",
    "Please keep the tone friendly but precise, and avoid jargon where possible. ",
    "Version 2.4.1 of the SDK fixed the retry bug, see ticket PLAT-4821 and PR #1932. ",
    "Les chiffres du trimestre sont bons ; la croissance est portée par l'Europe. ",
    "The request id 550e8400-e29b-41d4-a716-446655440000 failed at 2024-11-23T10:15:30Z. ",
};

static const char *const extras[] = {
    "Contact: ana.lopez@acme-corp.io, +44 20 7946 1234. ",
    "Customer card 4539 5787 6362 1486 was declined from 10.20.30.40. ",
    "```python\\ndef load(path):\\n    return open(path).read()\\n```\\n",
    "Use key AKIA"
    "Q7ZJ4XK2M9TBL3WP for the staging bucket. ",
    "DB_PASSWORD=Xq9#Lm2!Rt7v and IBAN DE89 3704 0044 0532 0130 00. ",
};

static size_t make_prompt(char *out, int seed)
{
    size_t n = (size_t)snprintf(out, PROMPT_SIZE,
                                "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\","
                                "\"content\":\"You are a helpful assistant.\"},{\"role\":\"user\","
                                "\"content\":\"");
    const char *tail = "\"}],\"temperature\":0.2}";
    unsigned r = (unsigned)seed * 2654435761u;
    int k = 0;
    while (n + 200 + strlen(tail) < PROMPT_SIZE) {
        r = r * 1103515245u + 12345u;
        const char *p = (seed % 4 != 0 && k % 9 == 4) ? extras[(r >> 8) % 5] : prose[(r >> 8) % 8];
        n += (size_t)snprintf(out + n, PROMPT_SIZE - n, "%s", p);
        k++;
    }
    n += (size_t)snprintf(out + n, PROMPT_SIZE - n, "%s", tail);
    return n;
}

typedef enum { MODE_SCRATCH, MODE_PER_CALL, MODE_STREAM } mode_t_;

static double run(rl_dlp_engine_t *e, char (*prompts)[PROMPT_SIZE], const size_t *lens,
                  double seconds, mode_t_ mode, size_t *findings)
{
    rl_dlp_scratch_t *sc = NULL;
    if (mode != MODE_PER_CALL && rl_dlp_scratch_create(&sc) != RL_OK)
        exit(1);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 1024);
    size_t bytes = 0, iters = 0;
    *findings = 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < NPROMPTS; i++) {
            if (mode == MODE_STREAM) {
                rl_dlp_stream_t *s;
                if (rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s) != RL_OK)
                    exit(1);
                rl_dlp_findings_reset(&f);
                for (size_t at = 0; at < lens[i]; at += 256) {
                    size_t n = lens[i] - at < 256 ? lens[i] - at : 256;
                    if (rl_dlp_stream_feed(s, prompts[i] + at, n, sc, &f) != RL_OK ||
                        rl_dlp_stream_release(s, NULL) != RL_OK)
                        exit(1);
                }
                if (rl_dlp_stream_finish(s, sc, &f) != RL_OK)
                    exit(1);
                rl_dlp_stream_destroy(s);
            } else if (rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, prompts[i], lens[i], sc, &f) != RL_OK) {
                exit(1);
            }
            *findings += f.len;
            bytes += lens[i];
        }
        iters++;
        t = now();
    } while (t - t0 < seconds);
    *findings /= iters;
    rl_dlp_findings_free(&f);
    rl_dlp_scratch_destroy(sc);
    return (double)bytes / (t - t0) / 1e6;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    static char prompts[NPROMPTS][PROMPT_SIZE];
    size_t lens[NPROMPTS];
    for (int i = 0; i < NPROMPTS; i++)
        lens[i] = make_prompt(prompts[i], i);
    rl_dlp_engine_t *e;
    if (rl_dlp_engine_create(NULL, &e) != RL_OK) {
        fprintf(stderr, "engine: %s\n", rl_error_last());
        return 1;
    }
    size_t nf;
    run(e, prompts, lens, 0.2, MODE_SCRATCH, &nf); /* warm-up */
    double a = run(e, prompts, lens, seconds, MODE_SCRATCH, &nf);
    printf("scan, per-thread scratch: %8.1f MB/s  (%d prompts of ~4 KB, %zu findings per round, "
           "%zu rules)\n",
           a, NPROMPTS, nf, rl_dlp_engine_rule_count(e));
    double b = run(e, prompts, lens, seconds, MODE_PER_CALL, &nf);
    printf("scan, scratch per call:   %8.1f MB/s\n", b);
    double c = run(e, prompts, lens, seconds, MODE_STREAM, &nf);
    printf("stream, 256-byte chunks:  %8.1f MB/s\n", c);
    printf("dlp_scan_mb_s %.1f\n", a);
    rl_dlp_engine_release(e);
    return 0;
}

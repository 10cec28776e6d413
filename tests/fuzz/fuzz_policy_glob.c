/* Fuzzes glob conditions end to end: a policy with a glob on "user" (exact
 * case) or "model" (ASCII case folded) is compiled, which picks a fast
 * matcher for the pattern's shape (exact, prefix, suffix, contains, any, or
 * the general one), and evaluated against a text. Its verdict must equal a
 * plain reference matcher written from docs/policies.md: `*` any run of
 * characters, `?` one UTF-8 character, `\` makes the next character
 * literal, everything else itself, the whole string.
 *
 * Input: [flags][pattern] NUL [text]; both must be valid UTF-8 (the
 * reference then has one meaning for "character") without NUL. */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "rl_policy.h"

static size_t char_len(const unsigned char *s)
{
    return *s < 0x80 ? 1 : (*s & 0xE0) == 0xC0 ? 2 : (*s & 0xF0) == 0xE0 ? 3 : 4;
}

static unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Whether glob p matches all of s: dynamic programming over (pattern
 * position, text position), text positions at character starts. */
static bool reference(const unsigned char *p, size_t pn, const unsigned char *s, size_t sn,
                      bool icase)
{
    /* ok[j]: p[0..i) matches s[0..j); only character starts are set. */
    bool *ok = calloc(sn + 1, sizeof *ok), *next = calloc(sn + 1, sizeof *next);
    ok[0] = true;
    for (size_t i = 0; i < pn;) {
        memset(next, 0, sn + 1);
        if (p[i] == '*') {
            bool any = false;
            for (size_t j = 0; j <= sn; j += (j < sn ? char_len(s + j) : 1)) {
                any = any || ok[j];
                next[j] = any;
            }
            i++;
        } else if (p[i] == '?') {
            for (size_t j = 0; j < sn; j += char_len(s + j))
                if (ok[j])
                    next[j + char_len(s + j)] = true;
            i++;
        } else {
            const unsigned char *c = p + i;
            if (*c == '\\' && i + 1 < pn)
                c++;
            size_t cl = char_len(c);
            for (size_t j = 0; j < sn; j += char_len(s + j)) {
                if (!ok[j] || j + cl > sn)
                    continue;
                bool same = icase && cl == 1 ? fold(*c) == fold(s[j]) : memcmp(c, s + j, cl) == 0;
                if (same)
                    next[j + cl] = true;
            }
            i = (size_t)(c - p) + cl;
        }
        bool *t = ok;
        ok = next;
        next = t;
    }
    bool r = ok[sn];
    free(ok);
    free(next);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in = {data, size};
    bool icase = fuzz_byte(&in) & 1;
    const unsigned char *nul = memchr(in.p, '\0', in.n);
    if (nul == NULL)
        return 0;
    const unsigned char *p = in.p, *s = nul + 1;
    size_t pn = (size_t)(nul - in.p), sn = in.n - pn - 1;
    if (pn == 0 || !fuzz_plain_utf8(p, pn) || !fuzz_plain_utf8(s, sn))
        return 0;

    const char *field = icase ? "model" : "user";
    json_t *policies = json_pack("[{s:s, s:s, s:i, s:{s:s%}}]", "id", "p1", "action", "DENY",
                                 "priority", 1, "conditions", field, (const char *)p, pn);
    FUZZ_CHECK(policies != NULL, "pack");
    rl_policy_set_t *set = NULL;
    rl_policy_error_t err;
    rl_status_t st = rl_policy_compile(policies, &set, &err);
    json_decref(policies);
    if (st != RL_OK) {
        /* Only a trailing lone backslash or an oversized glob is refused. */
        bool lone = false;
        for (size_t i = 0; i < pn; i++)
            if (p[i] == '\\') {
                if (i + 1 == pn)
                    lone = true;
                i++;
            }
        FUZZ_CHECK(lone || pn > RL_POLICY_MAX_PATTERN, "refused: %s", err.message);
        return 0;
    }
    char *text = malloc(sn + 1);
    memcpy(text, s, sn);
    text[sn] = '\0';
    rl_policy_input_t req = {.agent_id = "a",
                             .action = "chat",
                             .method = "POST",
                             .path = "/v1/chat/completions",
                             .estimated_input_tokens = -1};
    if (icase)
        req.model = text;
    else
        req.user = text;
    rl_policy_result_t r;
    rl_policy_evaluate(set, &req, &r);
    FUZZ_CHECK(!r.error, "evaluation failed: %s", r.reason);
    bool want = reference(p, pn, s, sn, icase);
    FUZZ_CHECK(r.matched == want, "glob \"%.*s\" on \"%s\" (icase %d): engine %d, reference %d",
               (int)pn, (const char *)p, text, icase, r.matched, want);
    rl_policy_set_destroy(set);
    free(text);
    return 0;
}

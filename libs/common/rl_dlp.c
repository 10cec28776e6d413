/* rl_dlp: the DLP engine: the built-in detectors (patterns, validators,
 * context and placeholder checks), tenant configuration, the compiled
 * engine, one-shot and streaming scans, suppression of overlapping
 * findings, the verdict and redaction. The format validators live in
 * rl_dlp_validate.c. docs/dlp.md explains each detector's choices. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "rl_dlp.h"

#include <ctype.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A candidate check: buf is the subject (left context available from
 * buf[0]), [s, *e) the candidate; may shorten *e. True to report it. */
typedef bool (*check_fn)(const char *buf, size_t s, size_t *e);

typedef struct {
    const char *id;
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    int rank; /* overlap winner: higher wins; 0 never merges (SOURCE_CODE) */
} builtin_info_t;

typedef struct {
    rl_dlp_builtin_t builtin;
    const char *pattern;
    int group;         /* capture group giving the finding's span; 0 = whole match */
    check_fn check;    /* NULL: every match is a finding */
    const char *stems; /* one-shot prefilter: '|'-separated literals, one of which
                        * every match contains; NULL: none */
    unsigned lead;     /* most bytes a match may start before that literal */
    bool short_only;   /* the stems are words of prose too: a prefilter only on texts
                        * under STEM_PROSE_MAX bytes (longer ones contain them anyway) */
    /* A stem occurrence that can be part of a match (its neighbours), or NULL:
     * '.' and ':' are everywhere in JSON, an address's are between digits. */
    bool (*stem_ok)(const char *s, size_t len, size_t at);
    unsigned min_digits; /* every match holds at least this many ASCII digits:
                          * a whole text with fewer is not searched */
} pattern_t;

/* Left edge: not preceded by the given characters, or preceded by a JSON
 * escape (\n \r \t), since request bodies are scanned as raw JSON. */
#define LB(cls) "(?:(?<![" cls "])|(?<=\\\\[nrt]))"
#define ALNUM "A-Za-z0-9"

/* ---- helpers ------------------------------------------------------------ */

static bool ieq_at(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    if (w > n)
        return false;
    for (size_t i = 0; i < w; i++)
        if (tolower((unsigned char)s[i]) != word[i])
            return false;
    return true;
}

/* True when any of words (lower case, NULL-terminated list) occurs,
 * case-insensitively, in the window bytes before s. */
static bool word_before(const char *buf, size_t s, size_t window, const char *const *words)
{
    size_t from = s > window ? s - window : 0;
    for (size_t i = from; i < s; i++)
        for (const char *const *w = words; *w; w++)
            if (ieq_at(buf + i, s - i, *w))
                return true;
    return false;
}

static bool icontains(const char *s, size_t n, const char *word)
{
    for (size_t i = 0; i < n; i++)
        if (ieq_at(s + i, n - i, word))
            return true;
    return false;
}

/* Typical stand-ins for a real secret: words like "example" or "your",
 * a run of 6 identical characters or a counting run ("123456", "abcdef"),
 * or too little entropy for a random string of this length. */
static bool placeholder(const char *s, size_t n)
{
    static const char *const words[] = {"example", "xxxx",     "your",   "placeholder", "dummy",
                                        "sample",  "redacted", "insert", "changeme",    "fake"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (icontains(s, n, words[i]))
            return true;
    size_t same = 1, up = 1;
    for (size_t i = 1; i < n; i++) {
        same = s[i] == s[i - 1] ? same + 1 : 1;
        up = s[i] == s[i - 1] + 1 ? up + 1 : 1;
        if (same >= 6 || up >= 6)
            return true;
    }
    if (n >= 16 && rl_dlp_entropy(s, n) < 3.0)
        return true;
    return false;
}

/* ---- checks ------------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool check_email(const char *buf, size_t s, size_t *e)
{
    const char *at = memchr(buf + s, '@', *e - s);
    if (at == NULL)
        return false;
    /* "scheme://user:password@host": the part before '@' is a credential
     * (GENERIC_SECRET), not a mailbox. Find the token's start; if it holds
     * "://" with no '/' after it, the address is a URL's userinfo. */
    size_t t = s;
    while (t > 0 && s - t < 128 && !is_space(buf[t - 1]) && buf[t - 1] != '"' &&
           buf[t - 1] != '\'' && buf[t - 1] != '<' && buf[t - 1] != '(' && buf[t - 1] != ',')
        t--;
    for (size_t k = t; k + 3 <= s; k++)
        if (buf[k] == ':' && buf[k + 1] == '/' && buf[k + 2] == '/' &&
            memchr(buf + k + 3, '/', s - k - 3) == NULL)
            return false;
    const char *dom = at + 1;
    size_t dlen = (size_t)(buf + *e - dom);
    /* reserved documentation names (RFC 2606 / 6761) */
    static const char *const reserved[] = {"example.com", "example.org", "example.net"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        size_t r = strlen(reserved[i]);
        if (dlen >= r && ieq_at(dom + dlen - r, r, reserved[i]) &&
            (dlen == r || dom[dlen - r - 1] == '.'))
            return false;
    }
    const char *dot = NULL;
    for (size_t i = 0; i < dlen; i++)
        if (dom[i] == '.')
            dot = dom + i;
    const char *tld = dot + 1;
    size_t tlen = (size_t)(dom + dlen - tld);
    static const char *const tlds[] = {
        "example", "test", "invalid", "localhost", "local", "png",     "jpg", "jpeg",
        "gif",     "svg",  "webp",    "ico",       "bmp",   "js",      "ts",  "css",
        "html",    "htm",  "json",    "yaml",      "yml",   "md",      "txt", "py",
        "rb",      "java", "tsx",     "jsx",       "lock",  "internal"};
    for (size_t i = 0; i < sizeof tlds / sizeof tlds[0]; i++)
        if (strlen(tlds[i]) == tlen && ieq_at(tld, tlen, tlds[i]))
            return false;
    if (dlen >= 8 && ieq_at(dom, 8, "example."))
        return false;
    return true;
}

static const char *const phone_words[] = {"phone",    "tel", "mobile",  "cell",    "call", "fax",
                                          "whatsapp", "sms", "text me", "contact", NULL};

static bool nanp_ok(const char *d)
{
    /* d: 10 digits NPA NXX XXXX */
    if (d[0] < '2' || d[3] < '2')
        return false;
    if (d[1] == '1' && d[2] == '1') /* N11 service codes */
        return false;
    if (d[0] == '5' && d[1] == '5' && d[2] == '5') /* 555 is no area code */
        return false;
    if (d[3] == '5' && d[4] == '5' && d[5] == '5' && d[6] == '0' && d[7] == '1')
        return false; /* 555-0100..0199: reserved for fiction */
    return true;
}

static size_t digits_of(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] >= '0' && s[i] <= '9') {
            if (k < cap)
                out[k] = s[i];
            k++;
        }
    return k;
}

/* +CC groups: 9..15 digits (E.164); +1 must be a valid NANP number. */
static bool check_phone_intl(const char *buf, size_t s, size_t *e)
{
    char d[32];
    size_t k = digits_of(buf + s, *e - s, d, sizeof d);
    if (k < 9 || k > 15)
        return false;
    if (d[0] == '1') {
        if (k != 11)
            return false;
        return nanp_ok(d + 1);
    }
    /* "+7 (495)": at most one parenthesised group, single separators */
    for (size_t i = s + 1; i < *e; i++)
        if ((buf[i] == ' ' || buf[i] == '-' || buf[i] == '.') &&
            (buf[i - 1] == ' ' || buf[i - 1] == '-' || buf[i - 1] == '.'))
            return false;
    return true;
}

/* (NPA) NXX-XXXX, NPA-NXX-XXXX, NPA.NXX.XXXX, optional leading 1. */
static bool check_phone_nanp(const char *buf, size_t s, size_t *e)
{
    char d[16];
    size_t k = digits_of(buf + s, *e - s, d, sizeof d);
    const char *p = d;
    if (k == 11 && d[0] == '1')
        p = d + 1;
    else if (k != 10)
        return false;
    /* separators between NPA/NXX and NXX/XXXX must agree unless NPA is in () */
    const char *t = buf + s;
    size_t n = *e - s;
    if (memchr(t, '(', n) == NULL) {
        char seps[4];
        size_t ns = 0;
        for (size_t i = 0; i < n; i++)
            if (!(t[i] >= '0' && t[i] <= '9') && ns < sizeof seps)
                seps[ns++] = t[i];
        if (ns >= 2 && seps[ns - 1] != seps[ns - 2])
            return false;
    }
    return nanp_ok(p);
}

static bool check_phone_bare(const char *buf, size_t s, size_t *e)
{
    char d[16];
    size_t k = digits_of(buf + s, *e - s, d, sizeof d);
    const char *p = k == 11 ? d + 1 : d;
    if (k != 10 && !(k == 11 && d[0] == '1'))
        return false;
    return nanp_ok(p) && word_before(buf, s, 32, phone_words);
}

static bool ssn_placeholder(const char *s, size_t n)
{
    char d[16];
    size_t k = digits_of(s, n, d, sizeof d);
    if (k != 9)
        return true;
    static const char *const fake[] = {"123456789", "078051120", "219099999", "987654320",
                                       "987654321"};
    for (size_t i = 0; i < sizeof fake / sizeof fake[0]; i++)
        if (memcmp(d, fake[i], 9) == 0)
            return true;
    for (size_t i = 1; i < 9; i++)
        if (d[i] != d[0])
            return false;
    return true; /* 111-11-1111 and the like */
}

static bool check_ssn(const char *buf, size_t s, size_t *e)
{
    return rl_dlp_ssn_valid(buf + s, *e - s) && !ssn_placeholder(buf + s, *e - s);
}

static const char *const ssn_words[] = {"ssn",   "social security", "ss#", "ss #",
                                        "ss no", "taxpayer",        NULL};

static bool check_ssn_context(const char *buf, size_t s, size_t *e)
{
    return check_ssn(buf, s, e) && word_before(buf, s, 40, ssn_words);
}

/* Published test card numbers (card networks' and processors' sandboxes):
 * real format, no account behind them, pasted all day by developers. */
static const char *const test_cards[] = {
    "4111111111111111", "4242424242424242", "4000056655665556", "4012888888881881",
    "4222222222222",    "4000000000000002", "4000002500003155", "4000000000009995",
    "5555555555554444", "5200828282828210", "5105105105105100", "5454545454545454",
    "2223003122003222", "378282246310005",  "371449635398431",  "378734493671000",
    "6011111111111117", "6011000990139424", "6011000400000000", "3056930009020004",
    "30569309025904",   "36227206271667",   "38520000023237",   "3566002020360505",
    "3530111333300000", "6200000000000005", "6759649826438453", "4000000760000002",
};

static const char *const card_words[] = {"card",  "visa",    "mastercard", "amex", "credit",
                                         "debit", "payment", "cc",         "pan",  NULL};

static bool check_card(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    if (!rl_dlp_card_valid(t, n))
        return false;
    char d[32];
    size_t k = digits_of(t, n, d, sizeof d - 1);
    d[k] = '\0';
    for (size_t i = 0; i < sizeof test_cards / sizeof test_cards[0]; i++)
        if (strcmp(d, test_cards[i]) == 0)
            return false;
    bool separated = k != n;
    if (!separated && k != 15 && k != 16)
        return word_before(buf, s, 48, card_words);
    return true;
}

/* A grouped IBAN may have swallowed a following word ("... 7034 THEN"):
 * try the candidate, then shorter prefixes ending at a group boundary. */
static bool check_iban(const char *buf, size_t s, size_t *e)
{
    size_t end = *e;
    for (;;) {
        if (rl_dlp_iban_valid(buf + s, end - s)) {
            *e = end;
            return true;
        }
        const char *sp = NULL;
        for (size_t i = end; i > s; i--)
            if (buf[i - 1] == ' ') {
                sp = buf + i - 1;
                break;
            }
        if (sp == NULL)
            return false;
        end = (size_t)(sp - buf);
    }
}

/* True when the word just before s (skipping spaces, '=', ':', quotes) is
 * one of words, case-insensitively. */
static bool prev_word_is(const char *buf, size_t s, const char *const *words)
{
    size_t i = s;
    while (i > 0 && s - i < 8 &&
           (buf[i - 1] == ' ' || buf[i - 1] == '=' || buf[i - 1] == ':' || buf[i - 1] == '"' ||
            buf[i - 1] == '\'' || buf[i - 1] == '.'))
        i--;
    size_t end = i;
    while (i > 0 && end - i < 16 && isalpha((unsigned char)buf[i - 1]))
        i--;
    if (i == end || (i > 0 && isalnum((unsigned char)buf[i - 1])))
        return false;
    for (const char *const *w = words; *w; w++)
        if (strlen(*w) == end - i && ieq_at(buf + i, end - i, *w))
            return true;
    return false;
}

static const char *const version_words[] = {
    "version", "ver", "v", "release", "build", "rev", "revision", "firmware", "sdk", "api", NULL};

static bool check_ipv4(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    if (!rl_dlp_ipv4_valid(t, n))
        return false;
    unsigned o[4] = {0};
    int i = 0;
    for (size_t j = 0; j < n; j++) {
        if (t[j] == '.')
            i++;
        else
            o[i] = o[i] * 10 + (unsigned)(t[j] - '0');
    }
    if (o[0] == 0 || o[0] == 127 || o[0] == 255 || o[0] >= 224)
        return false; /* unspecified, loopback, netmasks, multicast and reserved */
    if (o[1] == 0 && o[2] == 0 && o[3] == 0)
        return false; /* "1.0.0.0": far more often a version than a network */
    if ((o[0] == 192 && o[1] == 0 && o[2] == 2) || (o[0] == 198 && o[1] == 51 && o[2] == 100) ||
        (o[0] == 203 && o[1] == 0 && o[2] == 113))
        return false; /* RFC 5737 documentation ranges */
    return !prev_word_is(buf, s, version_words);
}

static bool check_ipv6(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    if (!rl_dlp_ipv6_valid(t, n))
        return false;
    size_t groups = 0, longest = 0, cur = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || t[i] == ':' || t[i] == '.') {
            if (cur > 0)
                groups++;
            if (cur > longest)
                longest = cur;
            cur = 0;
        } else {
            cur++;
        }
    }
    if (groups < 2 || (groups == 2 && longest < 3))
        return false;
    /* 2001:db8::/32 is the documentation prefix (RFC 3849) */
    if (n >= 9 && ieq_at(t, n, "2001:db8:"))
        return false;
    if (n >= 10 && ieq_at(t, n, "2001:0db8:"))
        return false;
    return true;
}

/* Random-looking key body after a fixed prefix. */
static bool check_key_body(const char *buf, size_t s, size_t *e, size_t prefix)
{
    size_t n = *e - s;
    if (n <= prefix)
        return false;
    return !placeholder(buf + s + prefix, n - prefix);
}

static bool check_aws_id(const char *buf, size_t s, size_t *e)
{
    return check_key_body(buf, s, e, 4);
}

static bool check_aws_secret(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    bool up = false, lo = false, dig = false, other = false, hex = true;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        up |= c >= 'A' && c <= 'Z';
        lo |= c >= 'a' && c <= 'z';
        dig |= c >= '0' && c <= '9';
        other |= c == '/' || c == '+';
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            hex = false;
    }
    if (hex || !up || !lo || !(dig || other))
        return false;
    return !placeholder(t, n) && rl_dlp_entropy(t, n) >= 3.5;
}

static bool check_github(const char *buf, size_t s, size_t *e)
{
    size_t p = buf[s + 2] == '_' ? 4 : 11; /* "ghp_" or "github_pat_" */
    return check_key_body(buf, s, e, p);
}

static bool check_slack(const char *buf, size_t s, size_t *e)
{
    /* the last dash-separated segment is the random part */
    size_t last = s;
    for (size_t i = s; i < *e; i++)
        if (buf[i] == '-' || buf[i] == '/')
            last = i + 1;
    size_t n = *e - last;
    return n >= 8 && !placeholder(buf + last, n);
}

static bool check_stripe(const char *buf, size_t s, size_t *e)
{
    static const char doc_key[] = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"; /* Stripe's docs */
    size_t n = *e - s;
    if (n == sizeof doc_key - 1 && memcmp(buf + s, doc_key, n) == 0)
        return false;
    const char *u = memchr(buf + s + 3, '_', n - 3);
    size_t p = u ? (size_t)(u - (buf + s)) + 1 : 6;
    return check_key_body(buf, s, e, p);
}

static bool check_openai(const char *buf, size_t s, size_t *e)
{
    size_t p = 3;
    if (ieq_at(buf + s, *e - s, "sk-proj-"))
        p = 8;
    else if (ieq_at(buf + s, *e - s, "sk-admin-"))
        p = 9;
    else if (ieq_at(buf + s, *e - s, "sk-svcacct-"))
        p = 11;
    return check_key_body(buf, s, e, p);
}

static bool check_anthropic(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    const char *d = memchr(t + 7, '-', n - 7); /* after "sk-ant-api03" */
    size_t p = d ? (size_t)(d - t) + 1 : 7;
    return check_key_body(buf, s, e, p);
}

static bool check_google(const char *buf, size_t s, size_t *e)
{
    return check_key_body(buf, s, e, 4);
}

/* A header with a footer must enclose a body of real size: "-----BEGIN
 * PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----" in docs is not a key. */
static bool check_private_key(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    const char *hdr_end = memchr(t + 5, '-', n - 5);
    if (hdr_end == NULL)
        return false;
    while ((size_t)(hdr_end - t) < n && *hdr_end == '-')
        hdr_end++;
    if ((size_t)(hdr_end - t) >= n)
        return true; /* header only */
    size_t b64 = 0;
    for (const char *p = hdr_end; p < t + n; p++) {
        char c = *p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '+' || c == '/')
            b64++;
    }
    return b64 >= 64 + 20; /* footer letters included */
}

static bool check_jwt(const char *buf, size_t s, size_t *e)
{
    static const char jwt_io_sig[] = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    size_t n = *e - s, sl = sizeof jwt_io_sig - 1;
    if (n > sl && memcmp(buf + *e - sl, jwt_io_sig, sl) == 0)
        return false; /* the jwt.io example token */
    return rl_dlp_jwt_valid(buf + s, n);
}

/* A value after "password=", "api_key:" ...: long enough, letters and
 * digits or symbols, random enough, not a reference to where the secret
 * lives (${VAR}, process.env.X, a dotted name). */
static bool secret_value(const char *buf, size_t s, size_t *e)
{
    while (*e > s &&
           (buf[*e - 1] == '.' || buf[*e - 1] == '!' || buf[*e - 1] == '?' || buf[*e - 1] == ','))
        (*e)--;
    const char *t = buf + s;
    size_t n = *e - s;
    if (n < 8)
        return false;
    bool letter = false, other = false, dotted = true, seen_dot = false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        bool l = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        letter |= l;
        other |= !l;
        if (c == '.')
            seen_dot = true;
        else if (!(l || c == '_'))
            dotted = false;
    }
    if (!letter || !other || (dotted && seen_dot))
        return false;
    static const char *const refs[] = {
        "process.env", "os.environ", "getenv", "secrets.", "env.",      "vault:",   "${",
        "{{",          "%(",         "null",   "none",     "undefined", "true",     "false",
        "password",    "secret",     "token",  "hunter2",  "required",  "optional", "string"};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        if (strlen(refs[i]) >= 4 && icontains(t, n, refs[i]) && (i < 9 || n <= strlen(refs[i]) + 3))
            return false;
    /* references, not values: $VAR ${VAR} $(cmd) %(name)s %VAR% *** */
    if (t[0] == '$') {
        size_t k = 1;
        while (k < n && (isalnum((unsigned char)t[k]) || t[k] == '_'))
            k++;
        if (k == n || t[1] == '{' || t[1] == '(')
            return false;
    }
    if ((t[0] == '%' && (t[1] == '(' || t[n - 1] == '%')) || (t[0] == '*' && t[1] == '*'))
        return false;
    return !placeholder(t, n) && rl_dlp_entropy(t, n) >= 2.8;
}

static bool check_bearer(const char *buf, size_t s, size_t *e)
{
    size_t n = *e - s;
    if (n < 20)
        return false;
    return !placeholder(buf + s, n) && rl_dlp_entropy(buf + s, n) >= 3.5;
}

static bool check_url_password(const char *buf, size_t s, size_t *e)
{
    const char *t = buf + s;
    size_t n = *e - s;
    static const char *const fake[] = {"password", "pass", "passwd", "pwd", "secret",
                                       "xxx",      "***",  "<",      "$",   "{"};
    for (size_t i = 0; i < sizeof fake / sizeof fake[0]; i++)
        if (ieq_at(t, n, fake[i]) &&
            (strlen(fake[i]) == n || fake[i][0] == '<' || fake[i][0] == '$' || fake[i][0] == '{'))
            return false;
    return !placeholder(t, n);
}

/* ---- the table ---------------------------------------------------------- */

#define SEP_VALUE "\\\\?[\"']?\\s{0,3}(?:[:=]|=>|:=|\\s+(?:is|was)\\s)\\s{0,3}\\\\?[\"']?"
#define VALUE_CHARS "A-Za-z0-9_\\-+/=.!@#$%^&*~?|"

static const builtin_info_t builtin_info[RL_DLP_BUILTIN_COUNT] = {
    [RL_DLP_EMAIL] = {"EMAIL", RL_DLP_SEVERITY_MEDIUM, RL_DLP_ACTION_REDACT, 5},
    [RL_DLP_PHONE] = {"PHONE", RL_DLP_SEVERITY_MEDIUM, RL_DLP_ACTION_REDACT, 2},
    [RL_DLP_US_SSN] = {"US_SSN", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT, 5},
    [RL_DLP_CREDIT_CARD] = {"CREDIT_CARD", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT, 5},
    [RL_DLP_IBAN] = {"IBAN", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT, 6},
    [RL_DLP_IP_ADDRESS] = {"IP_ADDRESS", RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_WARN, 2},
    [RL_DLP_AWS_ACCESS_KEY] = {"AWS_ACCESS_KEY", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_AWS_SECRET_KEY] = {"AWS_SECRET_KEY", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 7},
    [RL_DLP_GITHUB_TOKEN] = {"GITHUB_TOKEN", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_SLACK_TOKEN] = {"SLACK_TOKEN", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_STRIPE_KEY] = {"STRIPE_KEY", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_OPENAI_KEY] = {"OPENAI_KEY", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_ANTHROPIC_KEY] = {"ANTHROPIC_KEY", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_GOOGLE_API_KEY] = {"GOOGLE_API_KEY", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_BLOCK, 8},
    [RL_DLP_PRIVATE_KEY] = {"PRIVATE_KEY", RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, 9},
    [RL_DLP_JWT] = {"JWT", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT, 8},
    [RL_DLP_GENERIC_SECRET] = {"GENERIC_SECRET", RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT, 1},
    [RL_DLP_SOURCE_CODE] = {"SOURCE_CODE", RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_WARN, 0},
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex_or_colon(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':';
}

/* IPv4: its first '.' has a digit on each side. */
static bool dot_between_digits(const char *s, size_t len, size_t at)
{
    return at > 0 && at + 1 < len && is_digit(s[at - 1]) && is_digit(s[at + 1]);
}

/* IPv6: within 5 bytes of its start there is a ':' with a hex digit or a
 * ':' on each side (the second colon of "::1", the first of "fe80::1"). */
static bool colon_in_address(const char *s, size_t len, size_t at)
{
    return at > 0 && at + 1 < len && is_hex_or_colon(s[at - 1]) && is_hex_or_colon(s[at + 1]);
}

static const pattern_t patterns[] = {
    /* EMAIL: local@domain.tld, no "git@host:" remotes */
    {RL_DLP_EMAIL,
     LB(ALNUM "._%+\\-") "(?!git@)[A-Za-z0-9](?:[A-Za-z0-9._%+\\-]{0,62}[A-Za-z0-9_%+\\-])?@"
                         "(?:[A-Za-z0-9](?:[A-Za-z0-9\\-]{0,61}[A-Za-z0-9])?\\.){1,8}"
                         "[A-Za-z]{2,24}(?![A-Za-z0-9\\-_]|\\.[A-Za-z0-9])",
     0, check_email, "@", 64, false, NULL, 0},

    /* PHONE: +CC international, NANP with separators, bare NANP after a phone word */
    {RL_DLP_PHONE,
     LB(ALNUM "+_") "\\+[1-9][0-9]{0,3}+(?:[ .\\-]?+(?:\\([0-9]{1,4}+\\)|[0-9]{1,6}+)){1,6}+"
                    "(?![0-9A-Za-z_]|[.\\-][0-9])",
     0, check_phone_intl, NULL, 0, false, NULL, 9},
    {RL_DLP_PHONE,
     LB(ALNUM "+\\-._") "(?:1[ .\\-])?(?:\\([2-9][0-9]{2}\\) ?|[2-9][0-9]{2}[ .\\-])"
                        "[2-9][0-9]{2}[ .\\-][0-9]{4}(?![0-9A-Za-z_]|[.\\-][0-9])",
     0, check_phone_nanp, NULL, 0, false, NULL, 10},
    {RL_DLP_PHONE, LB(ALNUM "+\\-._") "1?[2-9][0-9]{2}[2-9][0-9]{6}(?![0-9A-Za-z_]|[.\\-][0-9])", 0,
     check_phone_bare, NULL, 0, false, NULL, 10},

    /* US_SSN: AAA-GG-SSSS; spaced or bare only after an SSN word */
    {RL_DLP_US_SSN, LB(ALNUM "\\-_.") "[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9A-Za-z_]|-[0-9])", 0,
     check_ssn, NULL, 0, false, NULL, 9},
    {RL_DLP_US_SSN,
     LB(ALNUM "\\-_.") "[0-9]{3}(?: [0-9]{2} |[0-9]{2})[0-9]{4}(?![0-9A-Za-z_]|[ \\-][0-9])", 0,
     check_ssn_context, NULL, 0, false, NULL, 9},

    /* CREDIT_CARD: 4-4-4-4(-3), 4-6-5 / 4-6-4, or 12..19 bare digits */
    {RL_DLP_CREDIT_CARD,
     LB(ALNUM "\\-_.") "(?:[0-9]{4}([ \\-]?)[0-9]{4}\\1[0-9]{4}\\1[0-9]{4}(?:\\1[0-9]{3})?"
                       "|[0-9]{4}([ \\-])[0-9]{6}\\2[0-9]{4,5}|[0-9]{12,19})"
                       "(?![0-9A-Za-z_]|[ \\-.][0-9])",
     0, check_card, NULL, 0, false, NULL, 12},

    /* IBAN: compact or in groups of four */
    {RL_DLP_IBAN,
     LB(ALNUM "_") "[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"
                   "(?![A-Za-z0-9_])",
     0, check_iban, NULL, 0, false, NULL, 2},

    /* IP_ADDRESS: IPv4 dotted quad, IPv6 */
    {RL_DLP_IP_ADDRESS,
     LB(ALNUM "._\\-") "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"
                       "(?![0-9A-Za-z_\\-]|\\.[0-9])",
     0, check_ipv4, ".", 3, false, dot_between_digits, 4},
    {RL_DLP_IP_ADDRESS,
     LB(ALNUM ":._") "(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){2,7}(?:\\.[0-9]{1,3}){0,3}"
                     "(?![0-9A-Za-z_:])",
     0, check_ipv6, ":", 5, false, colon_in_address, 0},

    /* AWS_ACCESS_KEY: access key ids by prefix */
    {RL_DLP_AWS_ACCESS_KEY,
     LB(ALNUM "_") "(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|APKA)[A-Z0-9]{16}"
                   "(?![A-Za-z0-9_])",
     0, check_aws_id, NULL, 0, false, NULL, 0},

    /* AWS_SECRET_KEY: 40 base64 characters after an AWS secret key name, or
     * after an access key id (credentials.csv, "id / secret" pairs) */
    {RL_DLP_AWS_SECRET_KEY,
     "(?i:(?:aws|amazon)[a-z0-9_.\\- ]{0,24}?(?:secret|private)[a-z0-9_.\\- ]{0,16}?"
     "|secret_?access_?key|secretaccesskey)" SEP_VALUE
     "(?-i:([A-Za-z0-9/+]{40}))(?![A-Za-z0-9/+=])",
     1, check_aws_secret, NULL, 0, false, NULL, 0},
    {RL_DLP_AWS_SECRET_KEY,
     "(?:AKIA|ASIA)[A-Z0-9]{16}(?:[\\s,;:|\"'=]|\\\\[nrt\"]){1,12}"
     "(?:[A-Za-z_ ]{1,40}(?:[\\s,;:|\"'=]|\\\\[nrt\"]){1,6})?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
     1, check_aws_secret, NULL, 0, false, NULL, 0},

    /* GITHUB_TOKEN: classic (ghp_ gho_ ghu_ ghs_ ghr_) and fine-grained */
    {RL_DLP_GITHUB_TOKEN,
     LB(ALNUM "_") "(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})"
                   "(?![A-Za-z0-9_])",
     0, check_github, NULL, 0, false, NULL, 0},

    /* SLACK_TOKEN: xoxb/xoxp/xoxa/xoxo/xoxs/xoxr, xoxe refresh, xapp, webhooks */
    {RL_DLP_SLACK_TOKEN,
     LB(ALNUM "_\\-") "(?:xox[abposr]-[0-9]{6,15}-[0-9A-Za-z\\-]{8,200}"
                      "|xoxe(?:\\.xox[bp])?-[0-9]-[A-Za-z0-9\\-]{40,250}"
                      "|xapp-[0-9]-[A-Z0-9]{8,14}-[0-9]{8,15}-[a-f0-9]{32,80})(?![A-Za-z0-9_\\-])",
     0, check_slack, NULL, 0, false, NULL, 0},
    {RL_DLP_SLACK_TOKEN,
     "https://hooks\\.slack\\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,12}/[A-Z0-9]{6,14}/"
     "[A-Za-z0-9]{20,40}(?![A-Za-z0-9])",
     0, check_slack, NULL, 0, false, NULL, 0},

    /* STRIPE_KEY: secret and restricted keys (live and test), webhook secrets */
    {RL_DLP_STRIPE_KEY,
     LB(ALNUM "_") "(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,247}|whsec_[A-Za-z0-9+/=]{32,100})"
                   "(?![A-Za-z0-9_])",
     0, check_stripe, NULL, 0, false, NULL, 0},

    /* OPENAI_KEY: project, service-account, admin and legacy keys */
    {RL_DLP_OPENAI_KEY,
     LB(ALNUM "_\\-") "sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\\-]{40,250}"
                      "|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48})"
                      "(?![A-Za-z0-9_\\-])",
     0, check_openai, NULL, 0, false, NULL, 0},

    /* ANTHROPIC_KEY */
    {RL_DLP_ANTHROPIC_KEY,
     LB(ALNUM "_\\-") "sk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_\\-]{32,250}"
                      "(?![A-Za-z0-9_\\-])",
     0, check_anthropic, NULL, 0, false, NULL, 0},

    /* GOOGLE_API_KEY */
    {RL_DLP_GOOGLE_API_KEY, LB(ALNUM "_\\-") "AIza[0-9A-Za-z_\\-]{35}(?![A-Za-z0-9_\\-])", 0,
     check_google, NULL, 0, false, NULL, 0},

    /* PRIVATE_KEY: PEM/OpenSSH/PGP header, through the matching footer when it
     * follows within 8 KiB */
    {RL_DLP_PRIVATE_KEY,
     "-----BEGIN ((?:[A-Z0-9]+ ){0,3})PRIVATE KEY((?: BLOCK)?)-----"
     "(?:[\\s\\S]{0,8192}?-----END \\1PRIVATE KEY\\2-----)?",
     0, check_private_key, NULL, 0, false, NULL, 0},

    /* JWT: header.payload.signature, header "eyJ" (base64url of '{"') */
    {RL_DLP_JWT,
     LB(ALNUM "_\\-") "eyJ[A-Za-z0-9_\\-]{5,2000}\\.[A-Za-z0-9_\\-]{2,4000}\\."
                      "[A-Za-z0-9_\\-]{16,1000}(?![A-Za-z0-9_\\-]|\\.[A-Za-z0-9_\\-])",
     0, check_jwt, NULL, 0, false, NULL, 0},

    /* GENERIC_SECRET: a secret-named key with a random-looking value; a
     * bearer token; the password of a URL */
    {RL_DLP_GENERIC_SECRET,
     "(?i)(?<![A-Za-z0-9])"
     "(?:password|passwd|passphrase|pwd|secret|token|api[_\\-]?key|apikey|access[_\\-]?key"
     "|auth[_\\-]?key|private[_\\-]?key|client[_\\-]?secret|credentials?)"
     "(?:[_.\\-](?:key|value|base|secret|token|str|b64|hex))?(?![A-Za-z0-9])" SEP_VALUE
     "([" VALUE_CHARS "]{8,256}+)(?![(\\[{<:" VALUE_CHARS "])",
     1, secret_value, NULL, 0, false, NULL, 0},
    {RL_DLP_GENERIC_SECRET,
     "(?i)(?<![A-Za-z0-9])bearer\\s+([A-Za-z0-9_\\-+/=.~]{20,512}+)(?![A-Za-z0-9_\\-+/=.~])", 1,
     check_bearer, NULL, 0, false, NULL, 0},
    {RL_DLP_GENERIC_SECRET,
     "(?i)(?<![A-Za-z0-9+.\\-])[a-z][a-z0-9+.\\-]{1,15}://[^\\s:/@\"'\\\\]{1,64}:"
     "([^\\s:/@\"'\\\\]{6,128})@",
     1, check_url_password, "://", 16, false, NULL, 0},

    /* SOURCE_CODE: lines only code has */
    {RL_DLP_SOURCE_CODE, "#include\\s*[<\"][A-Za-z0-9_./\\-]{1,100}[>\"]", 0, NULL, "#include", 0,
     false, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "def [A-Za-z_][A-Za-z0-9_]{0,60}\\([^()]{0,200}\\)"
                      "(?:\\s*->\\s*[A-Za-z0-9_\\[\\], .|]{1,60})?:",
     0, NULL, "def ", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "class [A-Z][A-Za-z0-9_]{0,60}(?:\\([A-Za-z0-9_., "
                      "]{0,100}\\))?:(?=\\s|\\\\n)",
     0, NULL, "class ", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "(?:public|private|protected|internal)"
                      "(?:\\s+(?:static|final|abstract|async|override|virtual|synchronized))*"
                      "\\s+[A-Za-z_][A-Za-z0-9_<>\\[\\],.? "
                      "]{0,60}?\\s+[A-Za-z_][A-Za-z0-9_]{0,60}\\s*"
                      "\\([^()]{0,200}\\)\\s*(?:throws\\s+[A-Za-z0-9_., ]{1,80})?\\{",
     0, NULL, "public|private|protected|internal", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_$") "function\\s*\\*?\\s*[A-Za-z_$][A-Za-z0-9_$]{0,60}\\s*\\([^()]{0,200}\\)"
                       "\\s*\\{",
     0, NULL, "function", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_$") "(?:const|let|var)\\s+[A-Za-z_$][A-Za-z0-9_$]{0,60}\\s*=\\s*"
                       "(?:async\\s+)?(?:\\([^()]{0,200}\\)|[A-Za-z_$][A-Za-z0-9_$]{0,60})\\s*=>",
     0, NULL, "const|let|var", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "func\\s+(?:\\([^()]{0,100}\\)\\s*)?[A-Za-z_][A-Za-z0-9_]{0,60}\\s*"
                      "\\([^()]{0,200}\\)[^{}\\n]{0,100}\\{",
     0, NULL, "func", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "fn\\s+[a-z_][A-Za-z0-9_]{0,60}"
                      "(?:<[^<>]{0,100}>)?\\s*\\([^()]{0,200}\\)(?:\\s*->\\s*[^{};]{1,100})?\\s*"
                      "\\{",
     0, NULL, "fn", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "(?:class|interface|struct|enum|trait)\\s+[A-Z][A-Za-z0-9_]{0,60}"
                      "(?:<[^<>]{0,100}>)?(?:\\s*(?:extends|implements|:)\\s*[A-Za-z0-9_<>., "
                      "]{1,120})?\\s*\\{",
     0, NULL, "class|interface|struct|enum|trait", 0, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     "(?m)(?:^|(?<=\\\\n))[ \\t]{0,16}(?:from[ \\t]{1,4}[A-Za-z_][A-Za-z0-9_.]{0,80}[ \\t]{1,4}"
     "import[ \\t]{1,4}[A-Za-z_*][A-Za-z0-9_, *]{0,120}"
     "|import\\s+[A-Za-z_][A-Za-z0-9_.]{0,80}(?:\\s+as\\s+[A-Za-z_][A-Za-z0-9_]{0,40})?"
     "|import\\s+(?:[A-Za-z_$][A-Za-z0-9_$]{0,60}|\\{[^{}]{1,200}\\}"
     "|\\*\\s+as\\s+[A-Za-z_$][A-Za-z0-9_$]{0,60})\\s+from\\s+['\"][^'\"]{1,200}['\"];?"
     "|package\\s+[a-z][A-Za-z0-9_.]{0,100};?|using\\s+[A-Z][A-Za-z0-9_.]{0,100};)"
     "[ \\t]*(?=$|\\\\n|\\r)",
     0, NULL, "from|import|package|using", 16, true, NULL, 0},
    {RL_DLP_SOURCE_CODE,
     LB("A-Za-z0-9_") "(?:int|void)[ \\t]{1,8}main\\s*\\([^()]{0,100}\\)\\s*\\{", 0, NULL, "main",
     12, true, NULL, 0},
    {RL_DLP_SOURCE_CODE, "#!/(?:usr/)?(?:local/)?bin/(?:env\\s+)?[a-z0-9]{2,20}", 0, NULL, "#!/", 0,
     false, NULL, 0},
};

#define PATTERN_COUNT (sizeof patterns / sizeof patterns[0])

/* ---- names -------------------------------------------------------------- */

const char *rl_dlp_builtin_id(rl_dlp_builtin_t d)
{
    if ((int)d < 0 || d >= RL_DLP_BUILTIN_COUNT)
        return NULL;
    return builtin_info[d].id;
}

rl_status_t rl_dlp_builtin_parse(const char *id, rl_dlp_builtin_t *out)
{
    if (id != NULL)
        for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++)
            if (strcasecmp(id, builtin_info[d].id) == 0) {
                *out = (rl_dlp_builtin_t)d;
                return RL_OK;
            }
    return rl_error(RL_ERR_NOT_FOUND, "no built-in DLP detector of that id");
}

rl_dlp_severity_t rl_dlp_builtin_severity(rl_dlp_builtin_t d)
{
    return rl_dlp_builtin_id(d) ? builtin_info[d].severity : 0;
}

rl_dlp_action_t rl_dlp_builtin_action(rl_dlp_builtin_t d)
{
    return rl_dlp_builtin_id(d) ? builtin_info[d].action : 0;
}

static const char *const severity_names[] = {NULL, "low", "medium", "high", "critical"};
static const char *const action_names[] = {NULL, "warn", "redact", "block"};
static const char *const scope_names[] = {NULL, "request", "response", "both"};

const char *rl_dlp_severity_str(rl_dlp_severity_t s)
{
    return s >= RL_DLP_SEVERITY_LOW && s <= RL_DLP_SEVERITY_CRITICAL ? severity_names[s] : "?";
}

const char *rl_dlp_action_str(rl_dlp_action_t a)
{
    return a >= RL_DLP_ACTION_WARN && a <= RL_DLP_ACTION_BLOCK ? action_names[a] : "?";
}

const char *rl_dlp_scope_str(rl_dlp_scope_t s)
{
    return s >= RL_DLP_SCOPE_REQUEST && s <= RL_DLP_SCOPE_BOTH ? scope_names[s] : "?";
}

const char *rl_dlp_verdict_str(rl_dlp_verdict_t v)
{
    switch (v) {
    case RL_DLP_CLEAN:
        return "CLEAN";
    case RL_DLP_WARNED:
        return "DLP_WARNED";
    case RL_DLP_BLOCKED:
        return "DLP_BLOCKED";
    }
    return "?";
}

static rl_status_t parse_name(const char *s, const char *const *names, int n, int *out,
                              const char *what)
{
    if (s != NULL)
        for (int i = 1; i < n; i++)
            if (strcmp(s, names[i]) == 0) {
                *out = i;
                return RL_OK;
            }
    return rl_error(RL_ERR_INVALID, "unknown DLP %s", what);
}

rl_status_t rl_dlp_severity_parse(const char *s, rl_dlp_severity_t *out)
{
    int v = 0;
    rl_status_t st = parse_name(s, severity_names, 5, &v, "severity");
    if (st == RL_OK)
        *out = (rl_dlp_severity_t)v;
    return st;
}

rl_status_t rl_dlp_action_parse(const char *s, rl_dlp_action_t *out)
{
    int v = 0;
    rl_status_t st = parse_name(s, action_names, 4, &v, "action");
    if (st == RL_OK)
        *out = (rl_dlp_action_t)v;
    return st;
}

rl_status_t rl_dlp_scope_parse(const char *s, rl_dlp_scope_t *out)
{
    int v = 0;
    rl_status_t st = parse_name(s, scope_names, 4, &v, "scope");
    if (st == RL_OK)
        *out = (rl_dlp_scope_t)v;
    return st;
}

/* ---- pattern compilation ------------------------------------------------ */

static pcre2_code *builtin_code[PATTERN_COUNT];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static char builtin_failure[200]; /* "" when every built-in compiled */

/* Every built-in stem, grouped by first byte, so that one pass over a short
 * text finds where each pattern's stems occur (stems_index). */
#define STEM_REFS_MAX 64
typedef struct {
    const char *lit;
    uint8_t len;
    uint8_t pattern; /* index into patterns[] */
} stem_ref_t;
static stem_ref_t stem_refs[STEM_REFS_MAX];
static uint8_t stem_first[257]; /* refs starting with byte b: [stem_first[b], stem_first[b + 1]) */
static bool stem_index_ok;      /* every stem is in stem_refs */
/* Bytes that are a whole stem, and byte pairs that begin a longer one: most
 * places of a text are passed over after one table look-up. */
static bool stem_single[256];
static uint8_t stem_pair[65536 / 8];

_Static_assert(PATTERN_COUNT < 256, "stem_ref_t.pattern is a byte");

static void index_stems(void)
{
    size_t n = 0, total = 0;
    for (size_t i = 0; i < PATTERN_COUNT; i++)
        for (const char *q = patterns[i].stems; q && *q; q = strchr(q, '|') ? strchr(q, '|') + 1 : "")
            total++;
    if (total > STEM_REFS_MAX)
        return; /* stem_index_ok stays false: each pattern finds its stems itself */
    for (int b = 0; b < 256; b++) {
        stem_first[b] = (uint8_t)n;
        for (size_t i = 0; i < PATTERN_COUNT; i++)
            for (const char *q = patterns[i].stems; q && *q;) {
                const char *bar = strchr(q, '|');
                size_t len = bar ? (size_t)(bar - q) : strlen(q);
                if ((unsigned char)q[0] == b && n < STEM_REFS_MAX) {
                    stem_refs[n++] = (stem_ref_t){q, (uint8_t)len, (uint8_t)i};
                    if (len == 1) {
                        stem_single[b] = true;
                    } else {
                        unsigned pair = (unsigned)b << 8 | (unsigned char)q[1];
                        stem_pair[pair >> 3] |= (uint8_t)(1u << (pair & 7));
                    }
                }
                q += len + (bar != NULL);
            }
    }
    stem_first[256] = (uint8_t)n;
    stem_index_ok = true;
}

static void compile_builtins(void)
{
    index_stems();
    for (size_t i = 0; i < PATTERN_COUNT; i++) {
        int ec;
        PCRE2_SIZE eo;
        builtin_code[i] = pcre2_compile((PCRE2_SPTR)patterns[i].pattern, PCRE2_ZERO_TERMINATED, 0,
                                        &ec, &eo, NULL);
        if (builtin_code[i] == NULL) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(ec, msg, sizeof msg);
            snprintf(builtin_failure, sizeof builtin_failure,
                     "built-in DLP pattern %zu (%s) at offset %zu: %s", i,
                     builtin_info[patterns[i].builtin].id, (size_t)eo, (const char *)msg);
            for (size_t j = 0; j < i; j++) {
                pcre2_code_free(builtin_code[j]);
                builtin_code[j] = NULL;
            }
            return;
        }
        /* no JIT (an unsupported platform) still matches, in the interpreter */
        (void)pcre2_jit_compile(builtin_code[i], PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    }
}

#define CUSTOM_OPTIONS (PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C)
#define LOOKBEHIND_MAX_CHARS (RL_DLP_CONTEXT / 4)

/* PCRE2's minimum length counts lookarounds ("(?=x)" has length 1), so also
 * try the pattern on a few short subjects: an empty match on any of them
 * means the pattern can match nothing. Best effort; a scan ignores empty
 * matches in any case. */
static bool matches_empty(const pcre2_code *code)
{
    static const char *const probes[] = {
        "",   "a", "A", "x", "0", "1",        " ",
        "\n", "-", "_", ".", "@", "\xc3\xa9", "aaa 000 xyz AZ_-.@"};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    bool empty = md == NULL || mc == NULL;
    if (!empty)
        pcre2_set_match_limit(mc, RL_DLP_MATCH_LIMIT);
    for (size_t i = 0; !empty && i < sizeof probes / sizeof probes[0]; i++) {
        size_t n = strlen(probes[i]);
        for (size_t at = 0; at <= n && !empty; at++) {
            int rc = pcre2_match(code, (PCRE2_SPTR)probes[i], n, at, PCRE2_ANCHORED, md, mc);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (rc >= 0 && ov[0] == ov[1])
                empty = true;
        }
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return empty;
}

/* Compiles a custom pattern; on failure writes a message to err and returns
 * RL_ERR_INVALID or RL_ERR_TOO_LARGE (no error context recorded). */
static rl_status_t compile_custom(const char *pattern, pcre2_code **out, char *err, size_t cap)
{
    size_t len = pattern ? strlen(pattern) : 0;
    if (len == 0) {
        snprintf(err, cap, "pattern is empty");
        return RL_ERR_INVALID;
    }
    if (len > RL_DLP_PATTERN_MAX) {
        snprintf(err, cap, "pattern is %zu bytes, more than %d", len, RL_DLP_PATTERN_MAX);
        return RL_ERR_TOO_LARGE;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (cc == NULL) {
        snprintf(err, cap, "out of memory");
        return RL_ERR_NOMEM;
    }
    pcre2_set_max_pattern_length(cc, RL_DLP_PATTERN_MAX);
    pcre2_set_parens_nest_limit(cc, 64);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, CUSTOM_OPTIONS, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (code == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, cap, "pattern error at offset %zu: %s", (size_t)eo, (const char *)msg);
        return ec == PCRE2_ERROR_NOMEMORY ? RL_ERR_NOMEM : RL_ERR_INVALID;
    }
    uint32_t minlen = 0, lookbehind = 0;
    pcre2_pattern_info(code, PCRE2_INFO_MINLENGTH, &minlen);
    pcre2_pattern_info(code, PCRE2_INFO_MAXLOOKBEHIND, &lookbehind);
    if (minlen == 0 || matches_empty(code)) {
        pcre2_code_free(code);
        snprintf(err, cap, "pattern can match an empty string");
        return RL_ERR_INVALID;
    }
    if (lookbehind > LOOKBEHIND_MAX_CHARS) {
        pcre2_code_free(code);
        snprintf(err, cap, "pattern has a lookbehind of %u characters, more than %d", lookbehind,
                 LOOKBEHIND_MAX_CHARS);
        return RL_ERR_INVALID;
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    *out = code;
    return RL_OK;
}

rl_status_t rl_dlp_validate_pattern(const char *pattern, char *err, size_t cap)
{
    char msg[240];
    pcre2_code *code = NULL;
    rl_status_t st = compile_custom(pattern, &code, msg, sizeof msg);
    if (st != RL_OK) {
        if (err != NULL && cap > 0)
            snprintf(err, cap, "%s", msg);
        return rl_error(st, "%s", msg);
    }
    pcre2_code_free(code);
    if (err != NULL && cap > 0)
        err[0] = '\0';
    return RL_OK;
}

/* ---- configuration ------------------------------------------------------ */

typedef struct {
    bool enabled;
    rl_dlp_severity_t severity; /* 0 = default */
    rl_dlp_action_t action;     /* 0 = default */
} override_t;

typedef struct {
    char *id, *name, *pattern;
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    rl_dlp_scope_t scope;
    bool enabled;
} custom_t;

struct rl_dlp_config {
    override_t builtin[RL_DLP_BUILTIN_COUNT];
    custom_t *rules;
    size_t nrules;
};

rl_status_t rl_dlp_config_create(rl_dlp_config_t **out)
{
    rl_dlp_config_t *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP configuration allocation failed");
    for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++)
        cfg->builtin[d].enabled = true;
    *out = cfg;
    return RL_OK;
}

static void custom_free(custom_t *c)
{
    free(c->id);
    free(c->name);
    free(c->pattern);
}

void rl_dlp_config_destroy(rl_dlp_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nrules; i++)
        custom_free(&cfg->rules[i]);
    free(cfg->rules);
    free(cfg);
}

static bool severity_ok(rl_dlp_severity_t s)
{
    return s >= RL_DLP_SEVERITY_LOW && s <= RL_DLP_SEVERITY_CRITICAL;
}

static bool action_ok(rl_dlp_action_t a)
{
    return a >= RL_DLP_ACTION_WARN && a <= RL_DLP_ACTION_BLOCK;
}

rl_status_t rl_dlp_config_set_builtin(rl_dlp_config_t *cfg, rl_dlp_builtin_t d, bool enabled,
                                      rl_dlp_severity_t severity, rl_dlp_action_t action)
{
    if (rl_dlp_builtin_id(d) == NULL)
        return rl_error(RL_ERR_INVALID, "DLP built-in %d out of range", (int)d);
    if ((severity != 0 && !severity_ok(severity)) || (action != 0 && !action_ok(action)))
        return rl_error(RL_ERR_INVALID, "DLP override of %s: bad severity or action",
                        builtin_info[d].id);
    cfg->builtin[d] = (override_t){enabled, severity, action};
    return RL_OK;
}

static bool rule_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > RL_DLP_RULE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!(isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

rl_status_t rl_dlp_config_add_rule(rl_dlp_config_t *cfg, const rl_dlp_rule_t *r)
{
    if (!rule_id_ok(r->id))
        return rl_error(RL_ERR_INVALID, "DLP rule id must be 1..%d of [A-Za-z0-9_.-]",
                        RL_DLP_RULE_ID_MAX);
    rl_dlp_builtin_t b;
    if (rl_dlp_builtin_parse(r->id, &b) == RL_OK)
        return rl_error(RL_ERR_INVALID, "DLP rule %s: id of a built-in detector", r->id);
    rl_error_clear();
    size_t nl = r->name ? strlen(r->name) : 0;
    if (nl == 0 || nl > RL_DLP_RULE_NAME_MAX)
        return rl_error(RL_ERR_INVALID, "DLP rule %s: name must be 1..%d bytes", r->id,
                        RL_DLP_RULE_NAME_MAX);
    if (!severity_ok(r->severity) || !action_ok(r->action) || r->scope < RL_DLP_SCOPE_REQUEST ||
        r->scope > RL_DLP_SCOPE_BOTH)
        return rl_error(RL_ERR_INVALID, "DLP rule %s: bad severity, action or scope", r->id);
    for (size_t i = 0; i < cfg->nrules; i++)
        if (strcmp(cfg->rules[i].id, r->id) == 0)
            return rl_error(RL_ERR_CONFLICT, "DLP rule %s added twice", r->id);
    if (cfg->nrules >= RL_DLP_RULES_MAX)
        return rl_error(RL_ERR_TOO_LARGE, "more than %d DLP rules", RL_DLP_RULES_MAX);
    char msg[240];
    pcre2_code *code = NULL;
    rl_status_t st = compile_custom(r->pattern, &code, msg, sizeof msg);
    if (st != RL_OK)
        return rl_error(st, "DLP rule %s: %s", r->id, msg);
    pcre2_code_free(code);
    custom_t c = {strdup(r->id), strdup(r->name), strdup(r->pattern), r->severity,
                  r->action,     r->scope,        r->enabled};
    custom_t *grown = realloc(cfg->rules, (cfg->nrules + 1) * sizeof *grown);
    if (c.id == NULL || c.name == NULL || c.pattern == NULL || grown == NULL) {
        custom_free(&c);
        if (grown != NULL)
            cfg->rules = grown;
        return rl_error(RL_ERR_NOMEM, "DLP rule %s: allocation failed", r->id);
    }
    cfg->rules = grown;
    cfg->rules[cfg->nrules++] = c;
    return RL_OK;
}

/* ---- engine ------------------------------------------------------------- */

typedef struct {
    const pcre2_code *re;
    pcre2_code *owned;    /* custom rules: compiled for this engine */
    const pattern_t *pat; /* built-in pattern, NULL for a custom rule */
    int builtin;          /* -1 for a custom rule */
    const char *detector;
    char *owned_id;
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    unsigned scope; /* RL_DLP_SCOPE_* bits */
    int rank;       /* -1 custom */
    bool utf;
} rule_t;

struct rl_dlp_engine {
    atomic_size_t refs;
    size_t nrules;
    rule_t *rules;
};

static void engine_free(rl_dlp_engine_t *e)
{
    for (size_t i = 0; i < e->nrules; i++) {
        pcre2_code_free(e->rules[i].owned);
        free(e->rules[i].owned_id);
    }
    free(e->rules);
    free(e);
}

rl_status_t rl_dlp_engine_create(const rl_dlp_config_t *cfg, rl_dlp_engine_t **out)
{
    pthread_once(&builtin_once, compile_builtins);
    if (builtin_failure[0] != '\0')
        return rl_error(RL_ERR_INTERNAL, "%s", builtin_failure);
    size_t n = 0;
    for (size_t i = 0; i < PATTERN_COUNT; i++)
        if (cfg == NULL || cfg->builtin[patterns[i].builtin].enabled)
            n++;
    if (cfg != NULL)
        for (size_t i = 0; i < cfg->nrules; i++)
            n += cfg->rules[i].enabled;
    rl_dlp_engine_t *e = calloc(1, sizeof *e);
    rule_t *rules = calloc(n ? n : 1, sizeof *rules);
    if (e == NULL || rules == NULL) {
        free(e);
        free(rules);
        return rl_error(RL_ERR_NOMEM, "DLP engine allocation failed");
    }
    atomic_init(&e->refs, 1);
    e->rules = rules;
    for (size_t i = 0; i < PATTERN_COUNT; i++) {
        const pattern_t *p = &patterns[i];
        const builtin_info_t *info = &builtin_info[p->builtin];
        const override_t *o = cfg ? &cfg->builtin[p->builtin] : NULL;
        if (o != NULL && !o->enabled)
            continue;
        rule_t *r = &rules[e->nrules++];
        r->re = builtin_code[i];
        r->pat = p;
        r->builtin = (int)p->builtin;
        r->detector = info->id;
        r->severity = o && o->severity ? o->severity : info->severity;
        r->action = o && o->action ? o->action : info->action;
        r->scope = RL_DLP_SCOPE_BOTH;
        r->rank = info->rank;
    }
    for (size_t i = 0; cfg != NULL && i < cfg->nrules; i++) {
        const custom_t *c = &cfg->rules[i];
        if (!c->enabled)
            continue;
        rule_t *r = &rules[e->nrules++];
        char msg[240];
        rl_status_t st = compile_custom(c->pattern, &r->owned, msg, sizeof msg);
        r->owned_id = strdup(c->id);
        if (st != RL_OK || r->owned_id == NULL) {
            engine_free(e);
            if (st == RL_OK)
                return rl_error(RL_ERR_NOMEM, "DLP engine allocation failed");
            return rl_error(st, "DLP rule %s: %s", c->id, msg);
        }
        r->re = r->owned;
        r->builtin = -1;
        r->detector = r->owned_id;
        r->severity = c->severity;
        r->action = c->action;
        r->scope = (unsigned)c->scope;
        r->rank = -1;
        r->utf = true;
    }
    *out = e;
    return RL_OK;
}

rl_dlp_engine_t *rl_dlp_engine_retain(rl_dlp_engine_t *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    return e;
}

void rl_dlp_engine_release(rl_dlp_engine_t *e)
{
    if (e == NULL)
        return;
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        engine_free(e);
}

size_t rl_dlp_engine_rule_count(const rl_dlp_engine_t *e)
{
    return e->nrules;
}

/* ---- scratch ------------------------------------------------------------ */

/* Built-in patterns run on PCRE2's default 32 KiB JIT stack (on the machine
 * stack, nothing to allocate); custom rules get a JIT stack of their own,
 * allocated the first time one runs. */
struct rl_dlp_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mc;     /* built-ins */
    pcre2_match_context *mc_big; /* custom rules: with js */
    pcre2_jit_stack *js;
};

#define JIT_STACK_START (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)

void rl_dlp_scratch_destroy(rl_dlp_scratch_t *s)
{
    if (s == NULL)
        return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mc);
    pcre2_match_context_free(s->mc_big);
    pcre2_jit_stack_free(s->js);
    free(s);
}

static void set_limits(pcre2_match_context *mc)
{
    pcre2_set_match_limit(mc, RL_DLP_MATCH_LIMIT);
    pcre2_set_depth_limit(mc, 10000);
    pcre2_set_heap_limit(mc, 20 * 1024); /* KiB, interpreter only */
}

rl_status_t rl_dlp_scratch_create(rl_dlp_scratch_t **out)
{
    rl_dlp_scratch_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP scratch allocation failed");
    s->md = pcre2_match_data_create(8, NULL);
    s->mc = pcre2_match_context_create(NULL);
    if (s->md == NULL || s->mc == NULL) {
        rl_dlp_scratch_destroy(s);
        return rl_error(RL_ERR_NOMEM, "DLP scratch allocation failed");
    }
    set_limits(s->mc);
    *out = s;
    return RL_OK;
}

static rl_status_t scratch_big_stack(rl_dlp_scratch_t *s)
{
    if (s->mc_big != NULL)
        return RL_OK;
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_jit_stack *js = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
    if (mc == NULL || js == NULL) {
        pcre2_match_context_free(mc);
        pcre2_jit_stack_free(js);
        return rl_error(RL_ERR_NOMEM, "DLP JIT stack allocation failed");
    }
    set_limits(mc);
    pcre2_jit_stack_assign(mc, NULL, js);
    s->mc_big = mc;
    s->js = js;
    return RL_OK;
}

/* ---- findings ----------------------------------------------------------- */

void rl_dlp_findings_init(rl_dlp_findings_t *f, size_t max)
{
    memset(f, 0, sizeof *f);
    f->max = max;
}

void rl_dlp_findings_reset(rl_dlp_findings_t *f)
{
    f->len = 0;
    f->dropped = 0;
    f->dropped_verdict = RL_DLP_CLEAN;
}

void rl_dlp_findings_free(rl_dlp_findings_t *f)
{
    free(f->items);
    f->items = NULL;
    f->len = f->cap = 0;
    f->dropped = 0;
    f->dropped_verdict = RL_DLP_CLEAN;
}

rl_dlp_verdict_t rl_dlp_finding_verdict(const rl_dlp_finding_t *f)
{
    if (f->action == RL_DLP_ACTION_BLOCK ||
        (f->severity == RL_DLP_SEVERITY_CRITICAL && f->action != RL_DLP_ACTION_REDACT))
        return RL_DLP_BLOCKED;
    return RL_DLP_WARNED;
}

rl_dlp_verdict_t rl_dlp_verdict(const rl_dlp_findings_t *f)
{
    rl_dlp_verdict_t v = f->dropped ? f->dropped_verdict : RL_DLP_CLEAN;
    for (size_t i = 0; i < f->len && v != RL_DLP_BLOCKED; i++) {
        rl_dlp_verdict_t x = rl_dlp_finding_verdict(&f->items[i]);
        if (x > v)
            v = x;
    }
    return v;
}

static rl_status_t findings_push(rl_dlp_findings_t *f, const rl_dlp_finding_t *x)
{
    if (f->len >= f->max) {
        f->dropped++;
        rl_dlp_verdict_t v = rl_dlp_finding_verdict(x);
        if (v > f->dropped_verdict)
            f->dropped_verdict = v;
        return RL_OK;
    }
    if (f->len == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        if (cap > f->max)
            cap = f->max;
        rl_dlp_finding_t *p = realloc(f->items, cap * sizeof *p);
        if (p == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP findings growth failed");
        f->items = p;
        f->cap = cap;
    }
    f->items[f->len++] = *x;
    return RL_OK;
}

/* ---- candidates and the search of one rule ------------------------------- */

typedef struct {
    size_t start, end; /* absolute */
    uint32_t rule;
} cand_t;

typedef struct {
    cand_t *v;
    size_t n, cap;
} cands_t;

static rl_status_t cands_push(cands_t *c, size_t start, size_t end, uint32_t rule)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        cand_t *p = realloc(c->v, cap * sizeof *p);
        if (p == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP candidate list growth failed");
        c->v = p;
        c->cap = cap;
    }
    c->v[c->n++] = (cand_t){start, end, rule};
    return RL_OK;
}

static size_t next_char(const char *s, size_t len, size_t pos, bool utf)
{
    pos++;
    if (utf)
        while (pos < len && ((unsigned char)s[pos] & 0xC0) == 0x80)
            pos++;
    return pos;
}

/* The one-shot prefilter: where the next of a pattern's literal stems
 * occurs, each found with find_stem and remembered until passed. */
#define STEMS_MAX 6

typedef struct {
    const char *lit[STEMS_MAX];
    size_t n[STEMS_MAX];
    size_t at[STEMS_MAX]; /* next occurrence (SIZE_MAX: none), valid while >= from[] */
    size_t from[STEMS_MAX];
    size_t count;
    bool (*ok)(const char *s, size_t len, size_t at); /* pattern_t.stem_ok */
} stems_t;

static bool stems_init(stems_t *st, const char *spec, bool (*ok)(const char *, size_t, size_t))
{
    st->count = 0;
    st->ok = ok;
    for (const char *p = spec; *p && st->count < STEMS_MAX;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        st->lit[st->count] = p;
        st->n[st->count] = n;
        st->from[st->count] = SIZE_MAX; /* not searched yet */
        st->count++;
        p += n + (bar != NULL);
    }
    return st->count > 0;
}

/* memmem for the stems: on the short texts of most requests, glibc's
 * memmem spends more time preparing its two-way search than searching
 * (75 % of a scan's time in a profile); memchr for the first byte and a
 * compare is several times faster there. Long texts keep memmem, whose
 * worst case stays linear. */
#define STEM_MEMCHR_MAX 1024
/* Texts from this size on skip the short_only prefilters (pattern_t). */
#define STEM_PROSE_MAX 1024

static const char *find_stem(const char *s, size_t n, const char *lit, size_t m)
{
    if (n >= STEM_MEMCHR_MAX)
        return memmem(s, n, lit, m);
    if (m == 0)
        return s;
    if (m > n)
        return NULL;
    const char *end = s + n - m + 1; /* the last place a match can start, + 1 */
    for (const char *p = s; p < end; p++) {
        p = memchr(p, (unsigned char)lit[0], (size_t)(end - p));
        if (p == NULL)
            return NULL;
        /* the second byte inline: most first-byte hits in prose end there */
        if (m == 1 || (p[1] == lit[1] && memcmp(p + 2, lit + 2, m - 2) == 0))
            return p;
    }
    return NULL;
}

static size_t stems_next(stems_t *st, const char *s, size_t len, size_t pos)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < st->count; i++) {
        if (st->from[i] == SIZE_MAX || st->from[i] > pos ||
            (st->at[i] != SIZE_MAX && st->at[i] < pos)) {
            const char *q = find_stem(s + pos, len - pos, st->lit[i], st->n[i]);
            while (q && st->ok && !st->ok(s, len, (size_t)(q - s)))
                q = find_stem(q + 1, (size_t)(s + len - q - 1), st->lit[i], st->n[i]);
            st->at[i] = q ? (size_t)(q - s) : SIZE_MAX;
            st->from[i] = pos;
        }
        if (st->at[i] < best)
            best = st->at[i];
    }
    return best;
}

/* Where each built-in pattern's stems occur in a short text, found in one
 * pass over it with the first-byte index (stem_refs): a memchr pass per
 * stem cost more (SOURCE_CODE alone has 23 stems). Only where stem_ok
 * allows, in increasing order. */
#define OCC_MAX 24

typedef struct {
    uint16_t pos[OCC_MAX];
    uint8_t n;
    bool overflow; /* more than OCC_MAX: the pattern finds its stems itself */
} occ_t;

static void find_all_stems(const char *s, size_t len, occ_t occ[PATTERN_COUNT])
{
    for (size_t i = 0; i < PATTERN_COUNT; i++) {
        occ[i].n = 0;
        occ[i].overflow = false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned b = (unsigned char)s[i];
        unsigned pair = i + 1 < len ? b << 8 | (unsigned char)s[i + 1] : 0;
        if (!stem_single[b] && !(stem_pair[pair >> 3] & (1u << (pair & 7))))
            continue;
        for (unsigned k = stem_first[b]; k < stem_first[b + 1]; k++) {
            const stem_ref_t *r = &stem_refs[k];
            if (r->len > len - i || (r->len > 1 && s[i + 1] != r->lit[1]) ||
                memcmp(s + i, r->lit, r->len) != 0)
                continue;
            const pattern_t *p = &patterns[r->pattern];
            if (p->stem_ok && !p->stem_ok(s, len, i))
                continue;
            occ_t *o = &occ[r->pattern];
            if (o->n > 0 && o->pos[o->n - 1] == i)
                continue; /* two stems of one pattern at one place */
            if (o->n < OCC_MAX)
                o->pos[o->n++] = (uint16_t)i;
            else
                o->overflow = true;
        }
    }
}

/* ASCII digits in s[0..n), eight bytes at a time: in t = byte ^ '0' a
 * digit is a byte below 10, i.e. one whose high bit is clear in t and in
 * (t | 0x80) - 10 (no borrow crosses bytes: each is at least 0x80). */
static size_t count_digits(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    size_t k = 0, i = 0;
    while (i + 8 <= n) {
        uint64_t per_byte = 0; /* digits per byte lane: at most 31 each */
        for (int w8 = 0; w8 < 31 && i + 8 <= n; w8++, i += 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            uint64_t t = w ^ (ones * '0');
            per_byte += (~((t | high) - ones * 10) & ~t & high) >> 7;
        }
        k += (size_t)((per_byte * ones) >> 56); /* the lanes' sum, at most 248 */
    }
    for (; i < n; i++)
        k += (unsigned char)(s[i] - '0') < 10;
    return k;
}

/* Searches rule r over subj[0..len) from pos; candidates (offsets + base)
 * go to out. final: the subject is complete. Otherwise the search is
 * partial-hard and stops at the first candidate that touches the end of
 * the subject. *resume: where this rule's next search must start (relative):
 * that candidate's start, or len. digits: count_digits of the whole
 * subject, or SIZE_MAX when not counted. */
static rl_status_t search(const rule_t *r, uint32_t ri, const char *subj, size_t len, size_t pos,
                          bool final, size_t base, size_t digits, const occ_t *occ,
                          rl_dlp_scratch_t *sc, cands_t *out, size_t *resume)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
    uint32_t opts = final ? 0 : PCRE2_PARTIAL_HARD;
    const pattern_t *p = r->pat;
    pcre2_match_context *mc = sc->mc;
    if (r->builtin < 0) {
        rl_status_t st = scratch_big_stack(sc);
        if (st != RL_OK)
            return st;
        mc = sc->mc_big;
    }
    *resume = len;
    if (final && p != NULL && digits < p->min_digits)
        return RL_OK; /* too few digits for any match */
    /* occ: where the stems are in the whole subject, found in one pass */
    const occ_t *o = occ && p && !occ[p - patterns].overflow ? &occ[p - patterns] : NULL;
    stems_t stems = {.count = 0};
    bool prefilter = final && p != NULL && p->stems != NULL &&
                     (!p->short_only || len < STEM_PROSE_MAX) &&
                     (o != NULL || stems_init(&stems, p->stems, p->stem_ok));
    size_t oi = 0;
    while (pos <= len) {
        if (prefilter) {
            size_t qp;
            if (o) {
                while (oi < o->n && o->pos[oi] < pos)
                    oi++;
                qp = oi < o->n ? o->pos[oi] : SIZE_MAX;
            } else {
                qp = stems_next(&stems, subj, len, pos);
            }
            if (qp == SIZE_MAX)
                return RL_OK;
            if (qp > pos + p->lead)
                pos = qp - p->lead;
        }
        int rc = pcre2_match(r->re, (PCRE2_SPTR)subj, len, pos, opts, sc->md, mc);
        if (rc == PCRE2_ERROR_NOMATCH)
            return RL_OK;
        if (rc == PCRE2_ERROR_PARTIAL) {
            *resume = ov[0];
            return RL_OK;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            rl_status_t st = rc == PCRE2_ERROR_NOMEMORY ? RL_ERR_NOMEM
                             : (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
                                rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
                                 ? RL_ERR_TIMEOUT
                                 : RL_ERR_INTERNAL;
            return rl_error(st, "DLP rule %s stopped at offset %zu: %s", r->detector, base + pos,
                            (const char *)msg);
        }
        size_t s = ov[0], e = ov[1], ss = s, se = e;
        int g = p ? p->group : 0;
        if (g > 0 && (rc == 0 || rc > g) && ov[2 * g] != PCRE2_UNSET) {
            ss = ov[2 * g];
            se = ov[2 * g + 1];
        }
        if (e <= s) { /* an empty match: no finding, move on */
            pos = next_char(subj, len, s, r->utf);
            continue;
        }
        bool ok = p == NULL || p->check == NULL || p->check(subj, ss, &se);
        if (ok && se > ss) {
            rl_status_t st = cands_push(out, base + ss, base + se, ri);
            if (st != RL_OK)
                return st;
            pos = se < e && se > s ? se : e;
        } else {
            pos = next_char(subj, len, s, r->utf);
        }
    }
    return RL_OK;
}

/* ---- overlap resolution ------------------------------------------------- */

/* True when candidate b makes a go: both built-ins that merge (not
 * SOURCE_CODE, not custom), overlapping, and b of higher rank, or of the
 * same detector and earlier, longer, or first in rule order. */
static bool dominates(const rule_t *rules, const cand_t *b, const cand_t *a)
{
    if (!(b->start < a->end && a->start < b->end) ||
        (b->start == a->start && b->end == a->end && b->rule == a->rule))
        return false;
    const rule_t *ra = &rules[a->rule], *rb = &rules[b->rule];
    if (ra->rank < 1 || rb->rank < 1)
        return false;
    if (ra->builtin == rb->builtin) {
        if (b->start != a->start)
            return b->start < a->start;
        if (b->end != a->end)
            return b->end > a->end;
        return b->rule < a->rule;
    }
    return rb->rank > ra->rank;
}

static int cand_cmp(const void *x, const void *y)
{
    const cand_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return a->rule < b->rule ? -1 : a->rule > b->rule;
}

static rl_dlp_finding_t finding_of(const rl_dlp_engine_t *e, const cand_t *c)
{
    const rule_t *r = &e->rules[c->rule];
    return (rl_dlp_finding_t){r->detector, r->builtin, r->severity, r->action, c->start, c->end};
}

/* ---- one-shot scan ------------------------------------------------------ */

static bool where_ok(rl_dlp_scope_t where)
{
    return where == RL_DLP_SCOPE_REQUEST || where == RL_DLP_SCOPE_RESPONSE;
}

rl_status_t rl_dlp_scan(const rl_dlp_engine_t *e, rl_dlp_scope_t where, const char *text,
                        size_t len, rl_dlp_scratch_t *scratch, rl_dlp_findings_t *out)
{
    if (!where_ok(where) || (text == NULL && len > 0))
        return rl_error(RL_ERR_INVALID, "DLP scan: where must be request or response");
    rl_dlp_findings_reset(out);
    rl_dlp_scratch_t *own = NULL;
    if (scratch == NULL) {
        rl_status_t st = rl_dlp_scratch_create(&own);
        if (st != RL_OK)
            return st;
        scratch = own;
    }
    if (text == NULL)
        text = "";
    cands_t c = {0};
    rl_status_t result = RL_OK;
    size_t digits = count_digits(text, len);
    occ_t occ[PATTERN_COUNT];
    bool short_text = stem_index_ok && len < STEM_MEMCHR_MAX;
    if (short_text)
        find_all_stems(text, len, occ);
    for (size_t i = 0; i < e->nrules; i++) {
        const rule_t *r = &e->rules[i];
        if (!(r->scope & (unsigned)where))
            continue;
        size_t resume;
        rl_status_t st = search(r, (uint32_t)i, text, len, 0, true, 0, digits,
                                short_text ? occ : NULL, scratch, &c, &resume);
        if (st == RL_ERR_TIMEOUT && result == RL_OK) {
            result = st; /* keep scanning with the other rules */
        } else if (st != RL_OK && st != RL_ERR_TIMEOUT) {
            result = st;
            goto done;
        }
    }
    if (c.n > 1)
        qsort(c.v, c.n, sizeof *c.v, cand_cmp);
    /* sorted by start: every pair that overlaps has b.start < a.end, b after a */
    unsigned char *gone = calloc(c.n ? c.n : 1, 1);
    if (gone == NULL) {
        result = rl_error(RL_ERR_NOMEM, "DLP scan allocation failed");
        goto done;
    }
    for (size_t i = 0; i < c.n; i++)
        for (size_t j = i + 1; j < c.n && c.v[j].start < c.v[i].end; j++) {
            if (dominates(e->rules, &c.v[j], &c.v[i]))
                gone[i] = 1;
            if (dominates(e->rules, &c.v[i], &c.v[j]))
                gone[j] = 1;
        }
    for (size_t i = 0; i < c.n; i++) {
        if (gone[i])
            continue;
        rl_dlp_finding_t f = finding_of(e, &c.v[i]);
        rl_status_t st = findings_push(out, &f);
        if (st != RL_OK) {
            result = st;
            break;
        }
    }
    free(gone);
done:
    free(c.v);
    rl_dlp_scratch_destroy(own);
    return result;
}

/* ---- redaction ---------------------------------------------------------- */

typedef struct {
    size_t start, end;
    const char *detector;
} span_t;

static int span_cmp(const void *x, const void *y)
{
    const span_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return 0;
}

/* Writes text (absolute [base, base + len)) to out with spans (clipped,
 * sorted here) replaced; out is unchanged on error. */
static rl_status_t redact_spans(const char *text, size_t len, size_t base, span_t *sp, size_t n,
                                rl_buf_t *out)
{
    size_t n2 = 0;
    for (size_t i = 0; i < n; i++) {
        size_t s = sp[i].start < base ? base : sp[i].start;
        size_t e = sp[i].end > base + len ? base + len : sp[i].end;
        if (s < e)
            sp[n2++] = (span_t){s - base, e - base, sp[i].detector};
    }
    if (n2 > 1)
        qsort(sp, n2, sizeof *sp, span_cmp);
    size_t old = out->len, at = 0;
    rl_status_t st = RL_OK;
    for (size_t i = 0; i < n2 && st == RL_OK;) {
        size_t s = sp[i].start, e = sp[i].end;
        const char *det = sp[i].detector;
        for (i++; i < n2 && sp[i].start < e; i++)
            if (sp[i].end > e)
                e = sp[i].end;
        st = rl_buf_append(out, text + at, s - at);
        if (st == RL_OK)
            st = rl_buf_appendf(out, RL_DLP_REDACT_PREFIX "%s]", det);
        at = e;
    }
    if (st == RL_OK)
        st = rl_buf_append(out, text + at, len - at);
    if (st != RL_OK && out->data != NULL) {
        out->len = old;
        out->data[old] = '\0';
    }
    return st;
}

/* rl_dlp_redact over the redact findings of f, or over all of them. */
static rl_status_t redact(const char *text, size_t len, size_t base, const rl_dlp_findings_t *f,
                          bool every, rl_buf_t *out)
{
    if (f->dropped > 0)
        return rl_error(RL_ERR_TOO_LARGE,
                        "%zu DLP findings past the list's bound: redaction "
                        "would be incomplete",
                        f->dropped);
    span_t *sp = malloc((f->len ? f->len : 1) * sizeof *sp);
    if (sp == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP redaction allocation failed");
    size_t n = 0;
    for (size_t i = 0; i < f->len; i++)
        if (every || f->items[i].action == RL_DLP_ACTION_REDACT)
            sp[n++] = (span_t){f->items[i].start, f->items[i].end, f->items[i].detector};
    rl_status_t st = redact_spans(text, len, base, sp, n, out);
    free(sp);
    return st;
}

rl_status_t rl_dlp_redact(const char *text, size_t len, size_t base, const rl_dlp_findings_t *f,
                          rl_buf_t *out)
{
    return redact(text, len, base, f, false, out);
}

rl_status_t rl_dlp_redact_every(const char *text, size_t len, size_t base,
                                const rl_dlp_findings_t *f, rl_buf_t *out)
{
    return redact(text, len, base, f, true, out);
}

/* ---- streaming ---------------------------------------------------------- */

struct rl_dlp_stream {
    rl_dlp_engine_t *e;
    unsigned where;
    char *buf; /* bytes [base, total) */
    size_t cap;
    size_t base, total;
    size_t released, safe;
    size_t *next;    /* per rule: absolute offset its next search starts at */
    cands_t pending; /* certain, not yet reported (overlaps may be unknown) */
    cands_t recent;  /* reported and still needed (redaction, overlaps) */
    bool finished;
};

rl_status_t rl_dlp_stream_create(rl_dlp_engine_t *e, rl_dlp_scope_t where, rl_dlp_stream_t **out)
{
    if (!where_ok(where))
        return rl_error(RL_ERR_INVALID, "DLP stream: where must be request or response");
    rl_dlp_stream_t *s = calloc(1, sizeof *s);
    size_t *next = calloc(e->nrules ? e->nrules : 1, sizeof *next);
    if (s == NULL || next == NULL) {
        free(s);
        free(next);
        return rl_error(RL_ERR_NOMEM, "DLP stream allocation failed");
    }
    s->e = rl_dlp_engine_retain(e);
    s->where = (unsigned)where;
    s->next = next;
    *out = s;
    return RL_OK;
}

void rl_dlp_stream_destroy(rl_dlp_stream_t *s)
{
    if (s == NULL)
        return;
    rl_dlp_engine_release(s->e);
    free(s->buf);
    free(s->next);
    free(s->pending.v);
    free(s->recent.v);
    free(s);
}

size_t rl_dlp_stream_safe(const rl_dlp_stream_t *s)
{
    return s->safe;
}

size_t rl_dlp_stream_total(const rl_dlp_stream_t *s)
{
    return s->total;
}

size_t rl_dlp_stream_released(const rl_dlp_stream_t *s)
{
    return s->released;
}

static bool overlapped_out(const rl_dlp_stream_t *s, const cand_t *a)
{
    for (size_t i = 0; i < s->pending.n; i++)
        if (dominates(s->e->rules, &s->pending.v[i], a))
            return true;
    for (size_t i = 0; i < s->recent.n; i++)
        if (dominates(s->e->rules, &s->recent.v[i], a))
            return true;
    return false;
}

/* Drops the bytes before keep from the buffer when that frees enough. */
static void compact(rl_dlp_stream_t *s, size_t keep)
{
    if (keep <= s->base)
        return;
    size_t drop = keep - s->base, have = s->total - s->base;
    if (drop < 4096 && drop < have / 2)
        return;
    memmove(s->buf, s->buf + drop, have - drop);
    s->base = keep;
}

/* len without a trailing incomplete UTF-8 sequence. */
static size_t utf8_complete(const char *s, size_t len)
{
    size_t i = len, k = 0;
    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        k++;
    }
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    return need > k ? i - 1 : len;
}

/* Runs every rule over the new bytes, then reports what became certain and
 * moves the safe point. */
static rl_status_t stream_run(rl_dlp_stream_t *s, bool final, rl_dlp_scratch_t *sc,
                              rl_dlp_findings_t *out)
{
    const rl_dlp_engine_t *e = s->e;
    size_t len = s->total - s->base;
    const char *buf = s->buf != NULL ? s->buf : ""; /* nothing fed yet */
    rl_status_t result = RL_OK;
    size_t horizon = s->total;
    for (size_t i = 0; i < e->nrules; i++) {
        const rule_t *r = &e->rules[i];
        if (!(r->scope & s->where))
            continue;
        size_t from = s->next[i] - s->base, resume;
        /* a UTF-8 rule must not see half a character at the end: to PCRE2
         * that is invalid UTF-8, not the start of a possible match */
        size_t rlen = r->utf && !final ? utf8_complete(buf, len) : len;
        if (from > rlen)
            from = rlen;
        rl_status_t st =
            search(r, (uint32_t)i, buf, rlen, from, final, s->base, SIZE_MAX, NULL, sc,
                   &s->pending, &resume);
        if (st == RL_OK && !final && s->base + resume + RL_DLP_STREAM_HOLD_MAX < s->total) {
            /* held too long: decide the candidate on what has arrived */
            size_t ignored;
            st = search(r, (uint32_t)i, buf, len, resume, true, s->base, SIZE_MAX, NULL, sc,
                        &s->pending, &ignored);
            resume = len;
        }
        if (st == RL_ERR_TIMEOUT) {
            if (result == RL_OK)
                result = st;
            resume = len;
        } else if (st != RL_OK) {
            return st;
        }
        s->next[i] = final ? s->total : s->base + resume;
        if (s->next[i] < horizon)
            horizon = s->next[i];
    }
    /* report, in start order, the pending candidates no unknown one can overlap */
    if (s->pending.n > 1)
        qsort(s->pending.v, s->pending.n, sizeof *s->pending.v, cand_cmp);
    size_t kept = 0;
    unsigned char *gone = calloc(s->pending.n ? s->pending.n : 1, 1);
    if (gone == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP stream allocation failed");
    for (size_t i = 0; i < s->pending.n; i++) {
        const cand_t *c = &s->pending.v[i];
        if (c->end > horizon)
            continue;
        gone[i] = 1;
        if (overlapped_out(s, c))
            continue;
        rl_dlp_finding_t f = finding_of(e, c);
        rl_status_t st = findings_push(out, &f);
        if (st == RL_OK)
            st = cands_push(&s->recent, c->start, c->end, c->rule);
        if (st != RL_OK) {
            free(gone);
            return st;
        }
    }
    size_t first_pending = SIZE_MAX;
    for (size_t i = 0; i < s->pending.n; i++)
        if (!gone[i]) {
            if (s->pending.v[i].start < first_pending)
                first_pending = s->pending.v[i].start;
            s->pending.v[kept++] = s->pending.v[i];
        }
    s->pending.n = kept;
    free(gone);
    /* the safe point: before anything undecided, never inside a finding */
    size_t safe = horizon < first_pending ? horizon : first_pending;
    for (bool moved = true; moved;) {
        moved = false;
        for (size_t i = 0; i < s->recent.n; i++)
            if (s->recent.v[i].start < safe && safe < s->recent.v[i].end) {
                safe = s->recent.v[i].start;
                moved = true;
            }
    }
    if (safe > s->safe)
        s->safe = safe;
    /* forget reported findings nothing can still overlap or redact */
    size_t low = s->released < first_pending ? s->released : first_pending;
    kept = 0;
    for (size_t i = 0; i < s->recent.n; i++)
        if (s->recent.v[i].end > low)
            s->recent.v[kept++] = s->recent.v[i];
    s->recent.n = kept;
    size_t ctx = horizon > RL_DLP_CONTEXT ? horizon - RL_DLP_CONTEXT : 0;
    compact(s, s->released < ctx ? s->released : ctx);
    return result;
}

rl_status_t rl_dlp_stream_feed(rl_dlp_stream_t *s, const char *data, size_t n,
                               rl_dlp_scratch_t *scratch, rl_dlp_findings_t *out)
{
    if (s->finished)
        return rl_error(RL_ERR_CONFLICT, "DLP stream fed after finish");
    size_t have = s->total - s->base;
    if (n > SIZE_MAX - have - 1)
        return rl_error(RL_ERR_TOO_LARGE, "DLP stream too large");
    if (have + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < have + n)
            cap *= 2;
        char *p = realloc(s->buf, cap);
        if (p == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP stream buffer growth failed");
        s->buf = p;
        s->cap = cap;
    }
    if (n > 0)
        memcpy(s->buf + have, data, n);
    s->total += n;
    rl_dlp_scratch_t *own = NULL;
    if (scratch == NULL) {
        rl_status_t st = rl_dlp_scratch_create(&own);
        if (st != RL_OK)
            return st;
        scratch = own;
    }
    rl_status_t st = stream_run(s, false, scratch, out);
    rl_dlp_scratch_destroy(own);
    return st;
}

rl_status_t rl_dlp_stream_finish(rl_dlp_stream_t *s, rl_dlp_scratch_t *scratch,
                                 rl_dlp_findings_t *out)
{
    if (s->finished)
        return rl_error(RL_ERR_CONFLICT, "DLP stream finished twice");
    rl_dlp_scratch_t *own = NULL;
    if (scratch == NULL) {
        rl_status_t st = rl_dlp_scratch_create(&own);
        if (st != RL_OK)
            return st;
        scratch = own;
    }
    rl_status_t st = stream_run(s, true, scratch, out);
    rl_dlp_scratch_destroy(own);
    if (st == RL_OK || st == RL_ERR_TIMEOUT) {
        s->finished = true;
        s->safe = s->total;
    }
    return st;
}

rl_status_t rl_dlp_stream_release(rl_dlp_stream_t *s, rl_buf_t *out)
{
    size_t from = s->released, to = s->safe;
    if (to <= from)
        return RL_OK;
    if (out != NULL) {
        span_t *sp = malloc((s->recent.n ? s->recent.n : 1) * sizeof *sp);
        if (sp == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP stream allocation failed");
        size_t n = 0;
        for (size_t i = 0; i < s->recent.n; i++) {
            const rule_t *r = &s->e->rules[s->recent.v[i].rule];
            if (r->action == RL_DLP_ACTION_REDACT)
                sp[n++] = (span_t){s->recent.v[i].start, s->recent.v[i].end, r->detector};
        }
        rl_status_t st = redact_spans(s->buf + (from - s->base), to - from, from, sp, n, out);
        free(sp);
        if (st != RL_OK)
            return st;
    }
    s->released = to;
    size_t horizon = s->total;
    for (size_t i = 0; i < s->e->nrules; i++)
        if ((s->e->rules[i].scope & s->where) && s->next[i] < horizon)
            horizon = s->next[i];
    size_t ctx = horizon > RL_DLP_CONTEXT ? horizon - RL_DLP_CONTEXT : 0;
    compact(s, s->released < ctx ? s->released : ctx);
    return RL_OK;
}

/* rl_dlp_detectors: the built-in DLP detectors: each one's id, default
 * severity, action and overlap rank, its PCRE2 patterns with their
 * prefilters, and the checks that decide a match (context words,
 * placeholders, entropy; the format validators are in rl_dlp_validate.c).
 * docs/dlp.md explains each detector's choices. */
#include "rl_dlp_internal.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

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

const dlp_builtin_info_t dlp_builtins[RL_DLP_BUILTIN_COUNT] = {
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

const dlp_pattern_t dlp_patterns[] = {
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

_Static_assert(sizeof dlp_patterns / sizeof dlp_patterns[0] == DLP_PATTERN_COUNT,
               "DLP_PATTERN_COUNT counts the rows of dlp_patterns");

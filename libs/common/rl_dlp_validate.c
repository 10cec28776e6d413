/* rl_dlp_validate: the format validators behind the DLP detectors (Luhn,
 * card issuer ranges, IBAN mod-97, SSN rules, IP addresses, JWT structure,
 * entropy). Pure functions of their input: thread-safe, no allocation except
 * the JSON parse of a JWT header. */
#include "rl_dlp.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "rl_crypto.h"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

/* Copies the digits of s into out (cap bytes), skipping ' ' and '-'.
 * Returns the count, or -1 on another byte or overflow. */
static int collect_digits(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' || s[i] == '-')
            continue;
        if (!is_digit(s[i]) || k >= cap)
            return -1;
        out[k++] = s[i];
    }
    return (int)k;
}

static bool luhn(const char *d, int n)
{
    int sum = 0;
    for (int i = n - 1, dbl = 0; i >= 0; i--, dbl ^= 1) {
        int v = d[i] - '0';
        if (dbl) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return sum % 10 == 0;
}

bool rl_dlp_luhn_valid(const char *s, size_t n)
{
    char d[64];
    int k = collect_digits(s, n, d, sizeof d);
    return k >= 2 && luhn(d, k);
}

static int prefix_num(const char *d, int len)
{
    int v = 0;
    for (int i = 0; i < len; i++)
        v = v * 10 + (d[i] - '0');
    return v;
}

/* True when the issuer prefix of d belongs to a network issuing n-digit cards. */
static bool card_network(const char *d, int n)
{
    int p1 = d[0] - '0', p2 = prefix_num(d, 2), p3 = prefix_num(d, 3), p4 = prefix_num(d, 4);
    int p6 = prefix_num(d, 6);
    if (p1 == 4) /* Visa */
        return n == 13 || n == 16 || n == 19;
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) /* Mastercard */
        return n == 16;
    if (p2 == 34 || p2 == 37) /* American Express */
        return n == 15;
    if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 || (p6 >= 622126 && p6 <= 622925))
        return n >= 16 && n <= 19;                                    /* Discover */
    if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39) /* Diners Club */
        return n >= 14 && n <= 19;
    if (p4 >= 3528 && p4 <= 3589) /* JCB */
        return n >= 16 && n <= 19;
    if (p2 == 62) /* UnionPay */
        return n >= 16 && n <= 19;
    if (p2 == 50 || (p2 >= 56 && p2 <= 69)) /* Maestro */
        return n >= 12 && n <= 19;
    return false;
}

bool rl_dlp_card_valid(const char *s, size_t n)
{
    char d[32];
    int k = collect_digits(s, n, d, sizeof d);
    if (k < 12 || k > 19)
        return false;
    return card_network(d, k) && luhn(d, k);
}

/* IBAN lengths by country, from the SWIFT IBAN registry. */
static const struct {
    char cc[3];
    unsigned char len;
} iban_countries[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22},
    {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18},
    {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27},
    {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27},
    {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20},
    {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MN", 20}, {"MR", 27},
    {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28},
    {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24}, {"SC", 31},
    {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"SO", 23}, {"ST", 25}, {"SV", 28},
    {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
};

static int iban_length(char a, char b)
{
    for (size_t i = 0; i < sizeof iban_countries / sizeof iban_countries[0]; i++)
        if (iban_countries[i].cc[0] == a && iban_countries[i].cc[1] == b)
            return iban_countries[i].len;
    return 0;
}

bool rl_dlp_iban_valid(const char *s, size_t n)
{
    char c[40];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            if (i == 0 || i + 1 == n || s[i - 1] == ' ')
                return false;
            continue;
        }
        if (!(is_digit(s[i]) || is_upper(s[i])) || k >= sizeof c)
            return false;
        c[k++] = s[i];
    }
    if (k < 5 || !is_upper(c[0]) || !is_upper(c[1]) || !is_digit(c[2]) || !is_digit(c[3]))
        return false;
    int want = iban_length(c[0], c[1]);
    if (want == 0 || (size_t)want != k)
        return false;
    /* mod 97 of BBAN + country + check digits, letters as 10..35 */
    unsigned rem = 0;
    for (size_t i = 0; i < k; i++) {
        char ch = c[(i + 4) % k];
        if (is_digit(ch))
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        else
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return rem == 1;
}

bool rl_dlp_ssn_valid(const char *s, size_t n)
{
    char d[9];
    size_t k = 0;
    if (n == 11) {
        char sep = s[3];
        if ((sep != '-' && sep != ' ') || s[6] != sep)
            return false;
        for (size_t i = 0; i < n; i++) {
            if (i == 3 || i == 6)
                continue;
            if (!is_digit(s[i]))
                return false;
            d[k++] = s[i];
        }
    } else if (n == 9) {
        for (size_t i = 0; i < n; i++) {
            if (!is_digit(s[i]))
                return false;
            d[k++] = s[i];
        }
    } else {
        return false;
    }
    int area = prefix_num(d, 3), group = prefix_num(d + 3, 2), serial = prefix_num(d + 5, 4);
    return area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
}

bool rl_dlp_ipv4_valid(const char *s, size_t n)
{
    size_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (octet > 0) {
            if (i >= n || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit(s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        size_t len = i - start;
        if (len == 0 || v > 255 || (len > 1 && s[start] == '0'))
            return false;
    }
    return i == n;
}

bool rl_dlp_ipv6_valid(const char *s, size_t n)
{
    char tmp[64];
    unsigned char addr[16];
    if (n < 2 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, addr) == 1;
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '_';
}

bool rl_dlp_jwt_valid(const char *s, size_t n)
{
    const char *dot1 = memchr(s, '.', n);
    if (dot1 == NULL)
        return false;
    size_t hlen = (size_t)(dot1 - s);
    const char *p = dot1 + 1;
    const char *dot2 = memchr(p, '.', n - hlen - 1);
    if (dot2 == NULL)
        return false;
    size_t plen = (size_t)(dot2 - p);
    const char *sig = dot2 + 1;
    size_t slen = n - hlen - plen - 2;
    if (hlen < 4 || plen < 2 || slen < 2 || hlen > 2048)
        return false;
    for (size_t i = 0; i < slen; i++)
        if (!is_b64url(sig[i]))
            return false;
    unsigned char hdr[1536];
    size_t hdrlen;
    if (rl_base64url_decode(s, hlen, hdr, sizeof hdr, &hdrlen) != RL_OK)
        return false;
    /* the payload must be base64url; its content is not needed, so decode in
     * pieces of 4 characters (3 bytes) without keeping them */
    for (size_t off = 0; off < plen; off += 4) {
        unsigned char piece[3];
        size_t plen_piece;
        size_t take = plen - off < 4 ? plen - off : 4;
        if (take == 1 ||
            rl_base64url_decode(p + off, take, piece, sizeof piece, &plen_piece) != RL_OK)
            return false;
    }
    json_error_t jerr;
    json_t *h = json_loadb((const char *)hdr, hdrlen, 0, &jerr);
    if (h == NULL)
        return false;
    bool ok = json_is_object(h) && json_is_string(json_object_get(h, "alg"));
    json_decref(h);
    return ok;
}

double rl_dlp_entropy(const char *s, size_t n)
{
    if (n == 0)
        return 0.0;
    size_t count[256] = {0};
    for (size_t i = 0; i < n; i++)
        count[(unsigned char)s[i]]++;
    double h = 0.0;
    for (int c = 0; c < 256; c++) {
        if (count[c] == 0)
            continue;
        double p = (double)count[c] / (double)n;
        h -= p * log2(p);
    }
    return h;
}

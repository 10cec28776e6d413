/* Time zones for policy time windows, without touching the process-global TZ:
 * fixed offsets, or TZif files (RFC 8536) read from the system database and
 * searched by binary search, with the footer's POSIX rule for times past the
 * last transition. */
#include "rl_policy_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_FILE_MAX (256 * 1024)
#define TZ_NAME_MAX 64
#define TZ_MAX_TRANS 5000
#define TZ_MAX_TYPES 256

/* Unix times for years 1..9999, the range civil dates are computed over. */
#define TZ_T_MIN (-62135596800LL)
#define TZ_T_MAX (253402300799LL)

int64_t rl_tz_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's days_from_civil. */
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int64_t year_from_days(int64_t z)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    return (int64_t)yoe + era * 400 + (m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* ---- POSIX TZ rules ---- */

static const char *parse_name(const char *s)
{
    if (*s == '<') {
        const char *e = strchr(s, '>');
        return e && e - s >= 4 ? e + 1 : NULL;
    }
    const char *p = s;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]h[h[h]][:mm[:ss]] into seconds, hours at most maxh. */
static const char *parse_hms(const char *s, int maxh, int32_t *out)
{
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    int h = 0, m = 0, sec = 0, nd = 0;
    while (*s >= '0' && *s <= '9' && nd < 3) {
        h = h * 10 + (*s++ - '0');
        nd++;
    }
    if (nd == 0 || h > maxh)
        return NULL;
    for (int part = 0; part < 2 && *s == ':'; part++) {
        s++;
        if (!(s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9'))
            return NULL;
        int v = (s[0] - '0') * 10 + (s[1] - '0');
        if (v > 59)
            return NULL;
        if (part == 0)
            m = v;
        else
            sec = v;
        s += 2;
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return s;
}

static const char *parse_num(const char *s, int lo, int hi, int *out)
{
    int v = 0, nd = 0;
    while (*s >= '0' && *s <= '9' && nd < 4) {
        v = v * 10 + (*s++ - '0');
        nd++;
    }
    if (nd == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return s;
}

static const char *parse_date(const char *s, rl_tz_date_t *d)
{
    int a, b, c;
    memset(d, 0, sizeof *d);
    if (*s == 'J') {
        if (!(s = parse_num(s + 1, 1, 365, &a)))
            return NULL;
        d->kind = 'J';
        d->day = (int16_t)a;
    } else if (*s == 'M') {
        if (!(s = parse_num(s + 1, 1, 12, &a)) || *s++ != '.' || !(s = parse_num(s, 1, 5, &b)) ||
            *s++ != '.' || !(s = parse_num(s, 0, 6, &c)))
            return NULL;
        d->kind = 'M';
        d->month = (uint8_t)a;
        d->week = (uint8_t)b;
        d->wday = (uint8_t)c;
    } else {
        if (!(s = parse_num(s, 0, 365, &a)))
            return NULL;
        d->kind = 'D';
        d->day = (int16_t)a;
    }
    d->time = 7200;
    if (*s == '/' && !(s = parse_hms(s + 1, 167, &d->time)))
        return NULL;
    return s;
}

rl_status_t rl_tz_parse_rule(const char *s, rl_tz_rule_t *r)
{
    memset(r, 0, sizeof *r);
    int32_t off;
    if (!(s = parse_name(s)) || !(s = parse_hms(s, 24, &off)))
        return RL_ERR_INVALID;
    r->std_off = -off;
    if (*s == '\0')
        return RL_OK;
    if (!(s = parse_name(s)))
        return RL_ERR_INVALID;
    r->has_dst = true;
    r->dst_off = r->std_off + 3600;
    if (*s != ',' && *s != '\0') {
        if (!(s = parse_hms(s, 24, &off)))
            return RL_ERR_INVALID;
        r->dst_off = -off;
    }
    if (*s == '\0') /* POSIX leaves the default rule to the implementation; glibc's */
        s = ",M3.2.0,M11.1.0";
    if (*s++ != ',' || !(s = parse_date(s, &r->start)) || *s++ != ',' ||
        !(s = parse_date(s, &r->end)) || *s != '\0')
        return RL_ERR_INVALID;
    return RL_OK;
}

/* Days since the epoch of the rule's date in year y. */
static int64_t rule_day(const rl_tz_date_t *d, int64_t y)
{
    int64_t jan1 = rl_tz_days_from_civil(y, 1, 1);
    if (d->kind == 'J')
        return jan1 + d->day - 1 + (is_leap(y) && d->day >= 60);
    if (d->kind == 'D')
        return jan1 + d->day;
    static const uint8_t mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t first = rl_tz_days_from_civil(y, d->month, 1);
    int64_t wd_first = ((first + 4) % 7 + 7) % 7;
    int64_t day = first + ((d->wday - wd_first + 7) % 7) + (int64_t)(d->week - 1) * 7;
    int64_t len = mdays[d->month - 1] + (d->month == 2 && is_leap(y));
    while (day >= first + len)
        day -= 7;
    return day;
}

static int32_t rule_offset(const rl_tz_rule_t *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_off;
    int64_t y = year_from_days(floor_div(t + r->std_off, 86400));
    for (int64_t k = y - 1; k <= y + 1; k++) {
        /* DST starts at a standard local time and ends at a daylight one. */
        int64_t s = rule_day(&r->start, k) * 86400 + r->start.time - r->std_off;
        int64_t e = rule_day(&r->end, k) * 86400 + r->end.time - r->dst_off;
        if (e <= s) /* southern hemisphere: DST runs into next year */
            e = rule_day(&r->end, k + 1) * 86400 + r->end.time - r->dst_off;
        if (t >= s && t < e)
            return r->dst_off;
    }
    return r->std_off;
}

bool rl_tz_offset(const rl_tz_t *tz, int64_t t, int32_t *off)
{
    if (t < TZ_T_MIN || t > TZ_T_MAX)
        return false;
    if (tz->fixed) {
        *off = tz->fixed_off;
        return true;
    }
    if (tz->ntrans == 0 || t >= tz->trans[tz->ntrans - 1]) {
        if (tz->has_rule) {
            *off = rule_offset(&tz->rule, t);
            return true;
        }
        *off = tz->ntrans == 0 ? tz->type_off[0] : tz->type_off[tz->trans_type[tz->ntrans - 1]];
        return true;
    }
    if (t < tz->trans[0]) {
        *off = tz->type_off[0];
        return true;
    }
    size_t lo = 0, hi = tz->ntrans - 1; /* trans[lo] <= t < trans[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    *off = tz->type_off[tz->trans_type[lo]];
    return true;
}

/* ---- loading ---- */

static rl_tz_t *tz_alloc(const char *name, size_t ntrans, size_t ntypes)
{
    size_t namelen = strlen(name) + 1;
    size_t size =
        sizeof(rl_tz_t) + ntrans * sizeof(int64_t) + ntypes * sizeof(int32_t) + ntrans + namelen;
    rl_tz_t *tz = calloc(1, size);
    if (tz == NULL)
        return NULL;
    char *p = (char *)(tz + 1); /* int64s first keep every array aligned */
    tz->trans = (int64_t *)(void *)p;
    p += ntrans * sizeof(int64_t);
    tz->type_off = (int32_t *)(void *)p;
    p += ntypes * sizeof(int32_t);
    tz->trans_type = (uint8_t *)p;
    p += ntrans;
    memcpy(p, name, namelen);
    tz->name = p;
    tz->ntrans = ntrans;
    tz->ntypes = ntypes;
    return tz;
}

void rl_tz_free(rl_tz_t *tz)
{
    free(tz);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct {
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} tzif_counts_t;

static bool read_header(const unsigned char *p, size_t len, tzif_counts_t *c)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    c->isutcnt = be32(p + 20);
    c->isstdcnt = be32(p + 24);
    c->leapcnt = be32(p + 28);
    c->timecnt = be32(p + 32);
    c->typecnt = be32(p + 36);
    c->charcnt = be32(p + 40);
    return true;
}

static size_t block_size(const tzif_counts_t *c, size_t tsize)
{
    return (size_t)c->timecnt * tsize + c->timecnt + (size_t)c->typecnt * 6 + c->charcnt +
           (size_t)c->leapcnt * (tsize + 4) + c->isstdcnt + c->isutcnt;
}

static rl_status_t parse_tzif(const char *name, const unsigned char *buf, size_t len, rl_tz_t **out,
                              char *err, size_t cap)
{
    tzif_counts_t c;
    if (!read_header(buf, len, &c) || c.timecnt > TZ_MAX_TRANS || c.typecnt > TZ_MAX_TYPES ||
        c.charcnt > 4096 || c.leapcnt > 1000 || c.isutcnt > TZ_MAX_TYPES ||
        c.isstdcnt > TZ_MAX_TYPES)
        goto bad;
    size_t tsize = 4;
    const unsigned char *p = buf + 44;
    size_t v1 = block_size(&c, 4);
    if (v1 > len - 44)
        goto bad;
    const unsigned char *end = buf + len;
    if (buf[4] >= '2') {
        p += v1;
        if (!read_header(p, (size_t)(end - p), &c) || c.timecnt > TZ_MAX_TRANS ||
            c.typecnt > TZ_MAX_TYPES || c.charcnt > 4096 || c.leapcnt > 1000 ||
            c.isutcnt > TZ_MAX_TYPES || c.isstdcnt > TZ_MAX_TYPES)
            goto bad;
        p += 44;
        tsize = 8;
        if (block_size(&c, 8) > (size_t)(end - p))
            goto bad;
    }
    if (c.typecnt == 0)
        goto bad;
    if (c.leapcnt > 0) {
        snprintf(err, cap, "time zone \"%s\" counts leap seconds, which is not supported", name);
        return RL_ERR_INVALID;
    }
    rl_tz_t *tz = tz_alloc(name, c.timecnt, c.typecnt);
    if (tz == NULL) {
        snprintf(err, cap, "out of memory");
        return RL_ERR_NOMEM;
    }
    int64_t *trans = (int64_t *)tz->trans;
    uint8_t *ttype = (uint8_t *)tz->trans_type;
    int32_t *toff = (int32_t *)tz->type_off;
    for (uint32_t i = 0; i < c.timecnt; i++) {
        trans[i] = tsize == 8 ? be64(p) : (int64_t)(int32_t)be32(p);
        if (i > 0 && trans[i] <= trans[i - 1])
            goto bad_free;
        p += tsize;
    }
    for (uint32_t i = 0; i < c.timecnt; i++) {
        ttype[i] = *p++;
        if (ttype[i] >= c.typecnt)
            goto bad_free;
    }
    for (uint32_t i = 0; i < c.typecnt; i++) {
        int32_t off = (int32_t)be32(p);
        if (off < -89999 || off > 93599)
            goto bad_free;
        toff[i] = off;
        p += 6;
    }
    p += c.charcnt + (size_t)c.leapcnt * (tsize + 4) + c.isstdcnt + c.isutcnt;
    if (tsize == 8 && p < end && *p == '\n') {
        const unsigned char *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
        if (nl == NULL || nl - p - 1 >= 128)
            goto bad_free;
        char rule[128];
        memcpy(rule, p + 1, (size_t)(nl - p - 1));
        rule[nl - p - 1] = '\0';
        if (rule[0] != '\0') {
            if (rl_tz_parse_rule(rule, &tz->rule) != RL_OK) {
                snprintf(err, cap, "time zone \"%s\" has a rule this engine cannot read (%s)", name,
                         rule);
                rl_tz_free(tz);
                return RL_ERR_INVALID;
            }
            tz->has_rule = true;
        }
    }
    *out = tz;
    return RL_OK;
bad_free:
    rl_tz_free(tz);
bad:
    snprintf(err, cap, "time zone \"%s\" is not a valid TZif file", name);
    return RL_ERR_INVALID;
}

/* "+HH:MM" / "-HH:MM" (up to 18:00) into seconds east of UTC. */
static bool parse_fixed(const char *s, int32_t *off)
{
    if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || s[3] != ':')
        return false;
    for (int i = 1; i < 6; i++)
        if (i != 3 && !(s[i] >= '0' && s[i] <= '9'))
            return false;
    int h = (s[1] - '0') * 10 + (s[2] - '0'), m = (s[4] - '0') * 10 + (s[5] - '0');
    if (m > 59 || h * 60 + m > 18 * 60)
        return false;
    *off = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return true;
}

static bool valid_zone_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TZ_NAME_MAX || s[0] == '/' || s[n - 1] == '/')
        return false;
    const char *seg = s;
    for (const char *p = s;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t sl = (size_t)(p - seg);
            if (sl == 0 || seg[0] == '.' || seg[0] == '-')
                return false;
            if (*p == '\0')
                return true;
            seg = p + 1;
            continue;
        }
        char ch = *p;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '+' || ch == '.'))
            return false;
    }
}

rl_status_t rl_tz_load(const char *name, rl_tz_t **out, char *err, size_t cap)
{
    int32_t off = 0;
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Z") == 0 || parse_fixed(name, &off)) {
        rl_tz_t *tz = tz_alloc(name, 0, 1);
        if (tz == NULL) {
            snprintf(err, cap, "out of memory");
            return RL_ERR_NOMEM;
        }
        tz->fixed = true;
        tz->fixed_off = off;
        *out = tz;
        return RL_OK;
    }
    if (name[0] == '+' || name[0] == '-') {
        snprintf(err, cap, "\"%s\" is not a UTC offset (+HH:MM or -HH:MM, at most 18:00)", name);
        return RL_ERR_INVALID;
    }
    if (!valid_zone_name(name)) {
        snprintf(err, cap,
                 "\"%s\" is not a time zone name (\"UTC\", \"+HH:MM\" or an IANA name such as "
                 "\"Europe/Paris\")",
                 name);
        return RL_ERR_INVALID;
    }
    const char *dir = getenv("TZDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = "/usr/share/zoneinfo";
    char path[512];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        snprintf(err, cap, "time zone path too long");
        return RL_ERR_INVALID;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, cap, "unknown time zone \"%s\" (%s: %s)", name, path, strerror(errno));
        return RL_ERR_NOT_FOUND;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > TZ_FILE_MAX) {
        close(fd);
        snprintf(err, cap, "unknown time zone \"%s\" (%s is not a zone file)", name, path);
        return RL_ERR_NOT_FOUND;
    }
    size_t len = (size_t)st.st_size;
    unsigned char *buf = malloc(len);
    if (buf == NULL) {
        close(fd);
        snprintf(err, cap, "out of memory");
        return RL_ERR_NOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    rl_status_t s;
    if (got != len) {
        snprintf(err, cap, "cannot read time zone \"%s\" (%s)", name, path);
        s = RL_ERR_NOT_FOUND;
    } else {
        s = parse_tzif(name, buf, len, out, err, cap);
    }
    free(buf);
    return s;
}

/* px_spool: see px_spool.h. Layout of a segment file (little-endian):
 *
 *   header  "RLSPOOL1" u64 seq                                  16 bytes
 *   record  u32 len | u32 crc | u16 slen | u16 ilen | subject | msg id | payload
 *           len = 4 + slen + ilen + payload bytes (what follows crc)
 *           crc = CRC-32 (IEEE 802.3, zlib's) of the 4 len bytes, then the len bytes
 *
 * The file "cursor" holds "RLSPCUR1" u64 seq u64 offset u32 crc (of the 24
 * bytes before it): the committed read position. Segments with a smaller seq
 * are consumed; segment seq is read from offset; later ones from their header.
 * A cursor that fails its CRC means "from the oldest segment" (duplicates,
 * never loss). */
#include "px_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SEG_MAGIC "RLSPOOL1"
#define SEG_HDR 16
#define REC_HDR 8   /* len + crc */
#define REC_FIXED 4 /* slen + ilen */
#define CUR_MAGIC "RLSPCUR1"
#define CUR_LEN 28
#define SEG_NAME_LEN 24 /* 20 digits + ".seg" */
#define UNSYNCED_MAX 16 /* rotated segments awaiting px_spool_sync() */

#define DEFAULT_MAX_BYTES (1LL << 30)
#define DEFAULT_RECORD_MAX (8u << 20)
#define SEGMENT_MIN (4LL << 10)
#define SEGMENT_MAX (64LL << 20)

typedef struct {
    uint64_t seq;
    int64_t size;     /* header + complete records */
    uint64_t records; /* complete records */
} seg_t;

struct px_spool {
    pthread_mutex_t mu;
    int dirfd, lockfd, curfd;
    int64_t max_bytes, segment_bytes;
    size_t record_max;
    bool sync_every;

    seg_t *segs; /* oldest first */
    size_t nsegs, capsegs;
    int wfd; /* the last segment, open for writing; -1: the next append opens a new one */
    uint64_t next_seq;
    int64_t bytes;

    /* read position: segment rseq at roff, rread of its records read */
    uint64_t rseq;
    int64_t roff;
    uint64_t rread;
    int rfd;
    uint64_t rfd_seq;
    bool peeked;
    int64_t peek_size;
    unsigned char *rbuf; /* body of the peeked record */
    size_t rcap, rlen;
    char subject[PX_SPOOL_SUBJECT_MAX + 1];
    char msg_id[PX_SPOOL_MSG_ID_MAX + 1];

    bool data_dirty, cur_dirty, dir_dirty;
    int unsynced[UNSYNCED_MAX]; /* write fds of rotated segments, not yet synced */
    size_t nunsynced;

    atomic_uint_least64_t depth;
    uint64_t appended, nread, refused, corrupt, truncated_bytes;
};

/* ---- CRC-32 ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* Continues a CRC: start with crc = 0. */
static uint32_t crc32_update(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- little-endian fields ---- */

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ---- files ---- */

static void seg_name(uint64_t seq, char out[SEG_NAME_LEN + 1])
{
    snprintf(out, SEG_NAME_LEN + 1, "%020llu.seg", (unsigned long long)seq);
}

static bool parse_seg_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 20, ".seg") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *seq = v;
    return true;
}

/* mkdir -p */
static rl_status_t make_dirs(const char *dir)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return rl_error(RL_ERR_INVALID, "spool dir: bad length");
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return rl_error(RL_ERR_IO, "mkdir %s: %s", path, strerror(errno));
        path[i] = c;
    }
    return RL_OK;
}

static bool write_full_at(int fd, const void *data, size_t n, off_t off)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w, n -= (size_t)w, off += w;
    }
    return true;
}

static bool read_full_at(int fd, void *data, size_t n, off_t off)
{
    char *p = data;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r, n -= (size_t)r, off += r;
    }
    return true;
}

/* Writes every iovec (pwritev may write less than asked). */
static bool writev_full_at(int fd, struct iovec *iov, int n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        off += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return true;
}

/* ---- segments in memory ---- */

static seg_t *find_seg(px_spool_t *sp, uint64_t seq)
{
    for (size_t i = 0; i < sp->nsegs; i++)
        if (sp->segs[i].seq == seq)
            return &sp->segs[i];
    return NULL;
}

static seg_t *next_seg(px_spool_t *sp, uint64_t seq)
{
    for (size_t i = 0; i < sp->nsegs; i++)
        if (sp->segs[i].seq > seq)
            return &sp->segs[i];
    return NULL;
}

static rl_status_t push_seg(px_spool_t *sp, seg_t s)
{
    if (sp->nsegs == sp->capsegs) {
        size_t cap = sp->capsegs ? sp->capsegs * 2 : 16;
        seg_t *p = realloc(sp->segs, cap * sizeof *p);
        if (!p)
            return rl_error(RL_ERR_NOMEM, "spool segments");
        sp->segs = p;
        sp->capsegs = cap;
    }
    sp->segs[sp->nsegs++] = s;
    return RL_OK;
}

static void close_rfd(px_spool_t *sp)
{
    if (sp->rfd >= 0)
        close(sp->rfd);
    sp->rfd = -1;
}

/* Unlinks segment i and forgets it. */
static void drop_seg(px_spool_t *sp, size_t i)
{
    char name[SEG_NAME_LEN + 1];
    seg_name(sp->segs[i].seq, name);
    unlinkat(sp->dirfd, name, 0);
    if (sp->rfd >= 0 && sp->rfd_seq == sp->segs[i].seq)
        close_rfd(sp);
    if (i == sp->nsegs - 1 && sp->wfd >= 0) {
        close(sp->wfd);
        sp->wfd = -1;
    }
    sp->bytes -= sp->segs[i].size;
    memmove(&sp->segs[i], &sp->segs[i + 1], (sp->nsegs - i - 1) * sizeof *sp->segs);
    sp->nsegs--;
    sp->dir_dirty = true;
}

/* Validates the record at p (avail bytes from it). Returns its total size, or
 * 0 when it is torn or corrupt. */
static size_t check_record(const unsigned char *p, size_t avail)
{
    if (avail < REC_HDR + REC_FIXED)
        return 0;
    uint32_t len = get_u32(p);
    if (len < REC_FIXED + 2 || len > avail - REC_HDR)
        return 0;
    uint32_t crc = crc32_update(crc32_update(0, p, 4), p + REC_HDR, len);
    if (crc != get_u32(p + 4))
        return 0;
    size_t slen = get_u16(p + REC_HDR), ilen = get_u16(p + REC_HDR + 2);
    if (slen == 0 || ilen == 0 || slen > PX_SPOOL_SUBJECT_MAX || ilen > PX_SPOOL_MSG_ID_MAX ||
        REC_FIXED + slen + ilen > len)
        return 0;
    return REC_HDR + len;
}

/* Opens segment seq found on disk: checks its header, cuts a torn or corrupt
 * tail, counts its records and adds it. Records at or after from_off count
 * towards depth; *first_off gets the first such record's offset. A segment
 * without a valid header is deleted. */
static rl_status_t load_seg(px_spool_t *sp, uint64_t seq, int64_t from_off, int64_t *first_off,
                            uint64_t *records_before)
{
    char name[SEG_NAME_LEN + 1];
    seg_name(seq, name);
    int fd = openat(sp->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return rl_error(RL_ERR_IO, "open spool segment %s: %s", name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return rl_error(RL_ERR_IO, "stat spool segment %s: %s", name, strerror(errno));
    }
    size_t fsize = (size_t)st.st_size;
    unsigned char *map = NULL;
    if (fsize > 0) {
        map = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return rl_error(RL_ERR_IO, "mmap spool segment %s: %s", name, strerror(errno));
        }
    }
    if (fsize < SEG_HDR || memcmp(map, SEG_MAGIC, 8) != 0 || get_u64(map + 8) != seq) {
        if (map)
            munmap(map, fsize);
        close(fd);
        unlinkat(sp->dirfd, name, 0);
        sp->truncated_bytes += fsize;
        sp->dir_dirty = true;
        return RL_OK;
    }
    size_t pos = SEG_HDR;
    uint64_t records = 0, before = 0;
    *first_off = -1;
    for (;;) {
        size_t n = check_record(map + pos, fsize - pos);
        if (n == 0)
            break;
        if ((int64_t)pos >= from_off) {
            if (*first_off < 0)
                *first_off = (int64_t)pos;
        } else {
            before++;
        }
        records++;
        pos += n;
    }
    munmap(map, fsize);
    if (*first_off < 0)
        *first_off = (int64_t)pos;
    if (pos < fsize) {
        if (ftruncate(fd, (off_t)pos) != 0) {
            close(fd);
            return rl_error(RL_ERR_IO, "truncate spool segment %s: %s", name, strerror(errno));
        }
        sp->truncated_bytes += fsize - pos;
        sp->data_dirty = true;
        if (fdatasync(fd) != 0) {
            close(fd);
            return rl_error(RL_ERR_IO, "sync spool segment %s: %s", name, strerror(errno));
        }
    }
    close(fd);
    rl_status_t s = push_seg(sp, (seg_t){.seq = seq, .size = (int64_t)pos, .records = records});
    if (s != RL_OK)
        return s;
    sp->bytes += (int64_t)pos;
    atomic_fetch_add(&sp->depth, records - before);
    *records_before = before;
    return RL_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists the segment files, sorted. */
static rl_status_t list_segs(px_spool_t *sp, uint64_t **out, size_t *n)
{
    int fd = dup(sp->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return rl_error(RL_ERR_IO, "read spool dir: %s", strerror(errno));
    }
    rewinddir(d);
    uint64_t *v = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t seq;
        if (!parse_seg_name(e->d_name, &seq))
            continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *p = realloc(v, cap * sizeof *v);
            if (!p) {
                free(v);
                closedir(d);
                return rl_error(RL_ERR_NOMEM, "spool dir listing");
            }
            v = p;
        }
        v[len++] = seq;
    }
    closedir(d);
    if (len > 0)
        qsort(v, len, sizeof *v, cmp_u64);
    *out = v;
    *n = len;
    return RL_OK;
}

static bool read_cursor(px_spool_t *sp, uint64_t *seq, int64_t *off)
{
    unsigned char b[CUR_LEN];
    if (!read_full_at(sp->curfd, b, sizeof b, 0) || memcmp(b, CUR_MAGIC, 8) != 0 ||
        crc32_update(0, b, 24) != get_u32(b + 24))
        return false;
    *seq = get_u64(b + 8);
    uint64_t o = get_u64(b + 16);
    *off = o > INT64_MAX ? INT64_MAX : (int64_t)o;
    return true;
}

static rl_status_t write_cursor(px_spool_t *sp, uint64_t seq, int64_t off)
{
    unsigned char b[CUR_LEN];
    memcpy(b, CUR_MAGIC, 8);
    put_u64(b + 8, seq);
    put_u64(b + 16, (uint64_t)off);
    put_u32(b + 24, crc32_update(0, b, 24));
    if (!write_full_at(sp->curfd, b, sizeof b, 0))
        return rl_error(RL_ERR_IO, "write spool cursor: %s", strerror(errno));
    sp->cur_dirty = true;
    return RL_OK;
}

/* ---- open / close ---- */

static void spool_free(px_spool_t *sp)
{
    for (size_t i = 0; i < sp->nunsynced; i++)
        close(sp->unsynced[i]);
    if (sp->wfd >= 0)
        close(sp->wfd);
    close_rfd(sp);
    if (sp->curfd >= 0)
        close(sp->curfd);
    if (sp->lockfd >= 0)
        close(sp->lockfd); /* releases the flock */
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    free(sp->rbuf);
    free(sp->segs);
    pthread_mutex_destroy(&sp->mu);
    free(sp);
}

static rl_status_t spool_load(px_spool_t *sp)
{
    uint64_t cseq = 0;
    int64_t coff = 0;
    if (!read_cursor(sp, &cseq, &coff))
        cseq = 0, coff = 0;

    uint64_t *seqs = NULL;
    size_t n = 0;
    rl_status_t s = list_segs(sp, &seqs, &n);
    if (s != RL_OK)
        return s;
    bool have_pos = false;
    for (size_t i = 0; i < n && s == RL_OK; i++) {
        if (seqs[i] < cseq) { /* consumed; its deletion did not happen before a stop */
            char name[SEG_NAME_LEN + 1];
            seg_name(seqs[i], name);
            unlinkat(sp->dirfd, name, 0);
            sp->dir_dirty = true;
            continue;
        }
        int64_t first = 0;
        uint64_t before = 0;
        size_t had = sp->nsegs;
        s = load_seg(sp, seqs[i], seqs[i] == cseq ? coff : 0, &first, &before);
        if (s != RL_OK || sp->nsegs == had)
            continue;
        if (!have_pos) {
            sp->rseq = seqs[i];
            sp->roff = first;
            sp->rread = before;
            have_pos = true;
        }
    }
    uint64_t max_seq = n > 0 ? seqs[n - 1] : 0;
    free(seqs);
    if (s != RL_OK)
        return s;
    if (!have_pos) {
        sp->rseq = cseq;
        sp->roff = coff;
        sp->rread = 0;
    }
    sp->next_seq = (max_seq > cseq ? max_seq : cseq) + 1;
    /* appends start a new segment: never write after a tail cut on open */
    sp->wfd = -1;
    return RL_OK;
}

rl_status_t px_spool_open(const px_spool_options_t *o, px_spool_t **out)
{
    if (!o || !out || !o->dir || !*o->dir || o->max_bytes < 0 || o->segment_bytes < 0)
        return rl_error(RL_ERR_INVALID, "spool: missing dir or negative option");
    pthread_once(&crc_once, crc_init);
    rl_status_t s = make_dirs(o->dir);
    if (s != RL_OK)
        return s;
    px_spool_t *sp = calloc(1, sizeof *sp);
    if (!sp)
        return rl_error(RL_ERR_NOMEM, "spool");
    pthread_mutex_init(&sp->mu, NULL);
    sp->dirfd = sp->lockfd = sp->curfd = sp->wfd = sp->rfd = -1;
    sp->max_bytes = o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
    int64_t seg = o->segment_bytes ? o->segment_bytes : sp->max_bytes / 16;
    sp->segment_bytes = seg < SEGMENT_MIN ? SEGMENT_MIN : seg > SEGMENT_MAX ? SEGMENT_MAX : seg;
    sp->record_max = o->record_max ? o->record_max : DEFAULT_RECORD_MAX;
    sp->sync_every = o->sync_every_append;
    atomic_init(&sp->depth, 0);

    sp->dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        s = rl_error(RL_ERR_IO, "open spool dir %s: %s", o->dir, strerror(errno));
        goto fail;
    }
    sp->lockfd = openat(sp->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sp->lockfd < 0) {
        s = rl_error(RL_ERR_IO, "open spool lock: %s", strerror(errno));
        goto fail;
    }
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) != 0) {
        s = errno == EWOULDBLOCK
                ? rl_error(RL_ERR_CONFLICT, "spool dir %s is in use by another spool", o->dir)
                : rl_error(RL_ERR_IO, "lock spool dir: %s", strerror(errno));
        goto fail;
    }
    sp->curfd = openat(sp->dirfd, "cursor", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sp->curfd < 0) {
        s = rl_error(RL_ERR_IO, "open spool cursor: %s", strerror(errno));
        goto fail;
    }
    s = spool_load(sp);
    if (s != RL_OK)
        goto fail;
    *out = sp;
    return RL_OK;
fail:
    spool_free(sp);
    return s;
}

void px_spool_close(px_spool_t *sp)
{
    if (!sp)
        return;
    (void)px_spool_sync(sp);
    spool_free(sp);
}

/* ---- append ---- */

/* Opens segment next_seq for writing, after the current one. Caller holds mu. */
static rl_status_t new_segment(px_spool_t *sp)
{
    char name[SEG_NAME_LEN + 1];
    uint64_t seq = sp->next_seq;
    seg_name(seq, name);
    int fd = openat(sp->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return rl_error(RL_ERR_IO, "create spool segment %s: %s", name, strerror(errno));
    unsigned char hdr[SEG_HDR];
    memcpy(hdr, SEG_MAGIC, 8);
    put_u64(hdr + 8, seq);
    rl_status_t s = RL_OK;
    if (!write_full_at(fd, hdr, sizeof hdr, 0))
        s = rl_error(RL_ERR_IO, "write spool segment %s: %s", name, strerror(errno));
    else
        s = push_seg(sp, (seg_t){.seq = seq, .size = SEG_HDR, .records = 0});
    if (s != RL_OK) {
        close(fd);
        unlinkat(sp->dirfd, name, 0);
        return s;
    }
    if (sp->wfd >= 0) {
        /* the rotated segment is synced by the next px_spool_sync(), not here
         * on an appender's (request) thread */
        if (sp->nunsynced == UNSYNCED_MAX) {
            fdatasync(sp->unsynced[0]);
            close(sp->unsynced[0]);
            memmove(sp->unsynced, sp->unsynced + 1, (UNSYNCED_MAX - 1) * sizeof(int));
            sp->nunsynced--;
        }
        sp->unsynced[sp->nunsynced++] = sp->wfd;
    }
    sp->wfd = fd;
    sp->next_seq = seq + 1;
    sp->bytes += SEG_HDR;
    sp->dir_dirty = true;
    sp->data_dirty = true;
    return RL_OK;
}

rl_status_t px_spool_append(px_spool_t *sp, const char *subject, const char *msg_id,
                            const void *data, size_t len)
{
    if (!sp || !subject || !msg_id || (len > 0 && !data))
        return rl_error(RL_ERR_INVALID, "spool append: missing argument");
    size_t slen = strlen(subject), ilen = strlen(msg_id);
    if (slen == 0 || slen > PX_SPOOL_SUBJECT_MAX || ilen == 0 || ilen > PX_SPOOL_MSG_ID_MAX)
        return rl_error(RL_ERR_INVALID, "spool append: bad subject or msg id length");
    uint64_t body = (uint64_t)REC_FIXED + slen + ilen + len;
    if (len > sp->record_max || body > UINT32_MAX) {
        pthread_mutex_lock(&sp->mu);
        sp->refused++;
        pthread_mutex_unlock(&sp->mu);
        return rl_error(RL_ERR_TOO_LARGE, "spool record of %zu bytes", len);
    }
    int64_t rec = (int64_t)(REC_HDR + body);

    unsigned char hdr[REC_HDR + REC_FIXED];
    put_u32(hdr, (uint32_t)body);
    put_u16(hdr + REC_HDR, (uint16_t)slen);
    put_u16(hdr + REC_HDR + 2, (uint16_t)ilen);
    uint32_t crc = crc32_update(0, hdr, 4);
    crc = crc32_update(crc, hdr + REC_HDR, REC_FIXED);
    crc = crc32_update(crc, subject, slen);
    crc = crc32_update(crc, msg_id, ilen);
    crc = crc32_update(crc, data, len);
    put_u32(hdr + 4, crc);
    struct iovec iov[4] = {
        {.iov_base = hdr, .iov_len = sizeof hdr},
        {.iov_base = (void *)subject, .iov_len = slen},
        {.iov_base = (void *)msg_id, .iov_len = ilen},
        {.iov_base = (void *)data, .iov_len = len},
    };

    pthread_mutex_lock(&sp->mu);
    seg_t *last = sp->wfd >= 0 ? &sp->segs[sp->nsegs - 1] : NULL;
    bool rotate = !last || (last->records > 0 && last->size + rec > sp->segment_bytes);
    if (sp->bytes + rec + (rotate ? SEG_HDR : 0) > sp->max_bytes) {
        sp->refused++;
        pthread_mutex_unlock(&sp->mu);
        return rl_error(RL_ERR_TOO_LARGE, "spool full (%lld bytes)", (long long)sp->max_bytes);
    }
    rl_status_t s = RL_OK;
    if (rotate && (s = new_segment(sp)) != RL_OK) {
        pthread_mutex_unlock(&sp->mu);
        return s;
    }
    last = &sp->segs[sp->nsegs - 1];
    if (!writev_full_at(sp->wfd, iov, 4, (off_t)last->size)) {
        int e = errno;
        /* nothing of a failed record may stay for the reader to trip on */
        if (ftruncate(sp->wfd, (off_t)last->size) != 0) {
            close(sp->wfd);
            sp->wfd = -1; /* seal it: the next append starts a new segment */
        }
        pthread_mutex_unlock(&sp->mu);
        return rl_error(RL_ERR_IO, "spool write: %s", strerror(e));
    }
    last->size += rec;
    last->records++;
    sp->bytes += rec;
    sp->appended++;
    sp->data_dirty = true;
    atomic_fetch_add(&sp->depth, 1);
    if (sp->sync_every && fdatasync(sp->wfd) != 0)
        s = rl_error(RL_ERR_IO, "spool sync: %s", strerror(errno));
    bool dir_dirty = sp->dir_dirty && sp->sync_every;
    pthread_mutex_unlock(&sp->mu);
    if (dir_dirty && s == RL_OK)
        s = px_spool_sync(sp);
    return s;
}

/* ---- reading ---- */

static void fill_record(px_spool_t *sp, px_spool_record_t *rec)
{
    const unsigned char *b = sp->rbuf;
    size_t slen = get_u16(b), ilen = get_u16(b + 2);
    rec->subject = sp->subject;
    rec->msg_id = sp->msg_id;
    rec->data = b + REC_FIXED + slen + ilen;
    rec->len = sp->rlen - REC_FIXED - slen - ilen;
}

rl_status_t px_spool_peek(px_spool_t *sp, px_spool_record_t *rec)
{
    if (!sp || !rec)
        return rl_error(RL_ERR_INVALID, "spool peek: missing argument");
    pthread_mutex_lock(&sp->mu);
    rl_status_t s = RL_OK;
    while (!sp->peeked) {
        seg_t *seg = find_seg(sp, sp->rseq);
        if (!seg || sp->roff >= seg->size) {
            seg_t *nx = next_seg(sp, sp->rseq);
            if (!nx) {
                s = RL_ERR_NOT_FOUND;
                break;
            }
            sp->rseq = nx->seq;
            sp->roff = SEG_HDR;
            sp->rread = 0;
            continue;
        }
        if (sp->rfd < 0 || sp->rfd_seq != seg->seq) {
            close_rfd(sp);
            char name[SEG_NAME_LEN + 1];
            seg_name(seg->seq, name);
            sp->rfd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
            if (sp->rfd < 0) {
                s = rl_error(RL_ERR_IO, "open spool segment %s: %s", name, strerror(errno));
                break;
            }
            sp->rfd_seq = seg->seq;
        }
        unsigned char hdr[REC_HDR];
        int64_t avail = seg->size - sp->roff;
        uint32_t len = 0;
        bool ok =
            avail >= REC_HDR + REC_FIXED && read_full_at(sp->rfd, hdr, sizeof hdr, (off_t)sp->roff);
        if (ok) {
            len = get_u32(hdr);
            ok = len >= REC_FIXED + 2 && (int64_t)len <= avail - REC_HDR;
        }
        if (ok && sp->rcap < len) {
            unsigned char *p = realloc(sp->rbuf, len);
            if (!p) {
                s = rl_error(RL_ERR_NOMEM, "spool read buffer of %u bytes", len);
                break;
            }
            sp->rbuf = p;
            sp->rcap = len;
        }
        if (ok)
            ok = read_full_at(sp->rfd, sp->rbuf, len, (off_t)(sp->roff + REC_HDR));
        if (ok) {
            const unsigned char *b = sp->rbuf;
            size_t slen = get_u16(b), ilen = get_u16(b + 2);
            ok = crc32_update(crc32_update(0, hdr, 4), b, len) == get_u32(hdr + 4) && slen > 0 &&
                 ilen > 0 && slen <= PX_SPOOL_SUBJECT_MAX && ilen <= PX_SPOOL_MSG_ID_MAX &&
                 REC_FIXED + slen + ilen <= len;
            if (ok) {
                memcpy(sp->subject, b + REC_FIXED, slen);
                sp->subject[slen] = '\0';
                memcpy(sp->msg_id, b + REC_FIXED + slen, ilen);
                sp->msg_id[ilen] = '\0';
                sp->rlen = len;
            }
        }
        if (!ok) {
            /* Corrupt after open (the disk changed under us): the rest of this
             * segment is unreadable. Skip it and seal it against appends. */
            uint64_t lost = seg->records > sp->rread ? seg->records - sp->rread : 0;
            sp->corrupt += lost;
            atomic_fetch_sub(&sp->depth, lost);
            sp->roff = seg->size;
            sp->rread = seg->records;
            if (seg == &sp->segs[sp->nsegs - 1] && sp->wfd >= 0) {
                if (sp->nunsynced < UNSYNCED_MAX)
                    sp->unsynced[sp->nunsynced++] = sp->wfd;
                else
                    close(sp->wfd);
                sp->wfd = -1;
            }
            continue;
        }
        sp->peeked = true;
        sp->peek_size = REC_HDR + (int64_t)len;
    }
    if (sp->peeked)
        fill_record(sp, rec);
    pthread_mutex_unlock(&sp->mu);
    return s;
}

rl_status_t px_spool_advance(px_spool_t *sp)
{
    if (!sp)
        return rl_error(RL_ERR_INVALID, "spool advance: NULL");
    pthread_mutex_lock(&sp->mu);
    if (!sp->peeked) {
        pthread_mutex_unlock(&sp->mu);
        return rl_error(RL_ERR_INVALID, "spool advance without a peeked record");
    }
    sp->roff += sp->peek_size;
    sp->rread++;
    sp->nread++;
    sp->peeked = false;
    atomic_fetch_sub(&sp->depth, 1);
    pthread_mutex_unlock(&sp->mu);
    return RL_OK;
}

rl_status_t px_spool_commit(px_spool_t *sp)
{
    if (!sp)
        return rl_error(RL_ERR_INVALID, "spool commit: NULL");
    pthread_mutex_lock(&sp->mu);
    /* The cursor first: a stop between the two leaves consumed segments that
     * the next open deletes, never a cursor behind deleted data. */
    rl_status_t s = write_cursor(sp, sp->rseq, sp->roff);
    if (s == RL_OK) {
        while (sp->nsegs > 0) {
            seg_t *g = &sp->segs[0];
            bool done =
                g->seq < sp->rseq || (g->seq == sp->rseq && sp->roff >= g->size && !sp->peeked);
            if (!done)
                break;
            drop_seg(sp, 0);
        }
    }
    pthread_mutex_unlock(&sp->mu);
    return s;
}

/* ---- sync ---- */

rl_status_t px_spool_sync(px_spool_t *sp)
{
    if (!sp)
        return rl_error(RL_ERR_INVALID, "spool sync: NULL");
    int fds[UNSYNCED_MAX + 3];
    bool isdir[UNSYNCED_MAX + 3];
    size_t n = 0;
    pthread_mutex_lock(&sp->mu);
    for (size_t i = 0; i < sp->nunsynced; i++, n++) {
        fds[n] = sp->unsynced[i]; /* ownership moves here */
        isdir[n] = false;
    }
    sp->nunsynced = 0;
    if (sp->data_dirty && sp->wfd >= 0 && (fds[n] = dup(sp->wfd)) >= 0)
        isdir[n++] = false;
    if (sp->cur_dirty && (fds[n] = dup(sp->curfd)) >= 0)
        isdir[n++] = false;
    if (sp->dir_dirty && (fds[n] = dup(sp->dirfd)) >= 0)
        isdir[n++] = true;
    sp->data_dirty = sp->cur_dirty = sp->dir_dirty = false;
    pthread_mutex_unlock(&sp->mu);

    rl_status_t s = RL_OK;
    for (size_t i = 0; i < n; i++) {
        if ((isdir[i] ? fsync(fds[i]) : fdatasync(fds[i])) != 0 && s == RL_OK)
            s = rl_error(RL_ERR_IO, "spool sync: %s", strerror(errno));
        close(fds[i]);
    }
    if (s != RL_OK) {
        pthread_mutex_lock(&sp->mu);
        sp->data_dirty = sp->cur_dirty = sp->dir_dirty = true;
        pthread_mutex_unlock(&sp->mu);
    }
    return s;
}

/* ---- levels ---- */

uint64_t px_spool_depth(const px_spool_t *sp)
{
    return sp ? atomic_load_explicit(&sp->depth, memory_order_relaxed) : 0;
}

void px_spool_stats(px_spool_t *sp, px_spool_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!sp)
        return;
    pthread_mutex_lock(&sp->mu);
    out->depth = atomic_load(&sp->depth);
    out->bytes = sp->bytes > 0 ? (uint64_t)sp->bytes : 0;
    out->segments = sp->nsegs;
    out->appended = sp->appended;
    out->read = sp->nread;
    out->refused = sp->refused;
    out->corrupt = sp->corrupt;
    out->truncated_bytes = sp->truncated_bytes;
    pthread_mutex_unlock(&sp->mu);
}

/* Tests services/proxy/px_spool.c: order across segments, restart at the
 * committed cursor, torn and corrupt tails, the size bound, the folder lock,
 * and concurrent appenders with one reader. Each test has a folder of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "px_spool.h"

#define SUBJECT "renlayer.traces.t.a"

typedef struct {
    char dir[64];
} fixture_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/test_px_spool.XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static px_spool_t *open_spool(const char *dir, int64_t max_bytes, int64_t segment_bytes)
{
    px_spool_options_t o = {.dir = dir, .max_bytes = max_bytes, .segment_bytes = segment_bytes};
    px_spool_t *sp = NULL;
    rl_status_t st = px_spool_open(&o, &sp);
    if (st != RL_OK)
        fail_msg("px_spool_open: %s: %s", rl_status_str(st), rl_error_last());
    return sp;
}

/* Record i: id "m-<i>", payload of 40..139 bytes derived from i, binary included. */
static size_t payload_of(int i, unsigned char *buf)
{
    size_t n = 40 + (size_t)(i * 37 % 100);
    for (size_t k = 0; k < n; k++)
        buf[k] = (unsigned char)(i * 31 + (int)k);
    return n;
}

static void append_n(px_spool_t *sp, int from, int to)
{
    unsigned char buf[256];
    char id[32];
    for (int i = from; i < to; i++) {
        snprintf(id, sizeof id, "m-%d", i);
        size_t n = payload_of(i, buf);
        assert_int_equal(px_spool_append(sp, SUBJECT, id, buf, n), RL_OK);
    }
}

/* Reads records from..to-1 in order and advances past each. */
static void expect_n(px_spool_t *sp, int from, int to)
{
    unsigned char buf[256];
    char id[32];
    for (int i = from; i < to; i++) {
        px_spool_record_t r;
        rl_status_t st = px_spool_peek(sp, &r);
        if (st != RL_OK)
            fail_msg("record %d: %s: %s", i, rl_status_str(st), rl_error_last());
        snprintf(id, sizeof id, "m-%d", i);
        assert_string_equal(r.msg_id, id);
        assert_string_equal(r.subject, SUBJECT);
        size_t n = payload_of(i, buf);
        assert_int_equal(r.len, n);
        assert_memory_equal(r.data, buf, n);
        assert_int_equal(px_spool_advance(sp), RL_OK);
    }
}

static int count_segments(const char *dir, char *last, size_t cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    if (last && cap)
        last[0] = '\0';
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".seg") == 0) {
            n++;
            if (last && strcmp(e->d_name, last) > 0)
                snprintf(last, cap, "%s", e->d_name);
        }
    }
    closedir(d);
    return n;
}

/* ---- tests ---- */

static void test_order_across_segments(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 0, 4096);
    px_spool_record_t r;
    assert_int_equal(px_spool_peek(sp, &r), RL_ERR_NOT_FOUND);
    assert_int_equal(px_spool_advance(sp), RL_ERR_INVALID);

    append_n(sp, 0, 500);
    assert_int_equal(px_spool_depth(sp), 500);
    px_spool_stats_t st;
    px_spool_stats(sp, &st);
    assert_true(st.segments > 5);
    assert_int_equal(count_segments(f->dir, NULL, 0), (int)st.segments);

    /* a peek does not consume */
    assert_int_equal(px_spool_peek(sp, &r), RL_OK);
    assert_string_equal(r.msg_id, "m-0");
    assert_int_equal(px_spool_peek(sp, &r), RL_OK);
    assert_string_equal(r.msg_id, "m-0");

    expect_n(sp, 0, 250);
    assert_int_equal(px_spool_depth(sp), 250);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    px_spool_stats_t mid;
    px_spool_stats(sp, &mid);
    assert_true(mid.segments < st.segments); /* read segments are gone */
    assert_true(mid.bytes < st.bytes);
    assert_int_equal(count_segments(f->dir, NULL, 0), (int)mid.segments);

    /* appends keep going while the reader is in the middle */
    append_n(sp, 500, 520);
    expect_n(sp, 250, 520);
    assert_int_equal(px_spool_peek(sp, &r), RL_ERR_NOT_FOUND);
    assert_int_equal(px_spool_depth(sp), 0);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    px_spool_stats(sp, &st);
    assert_int_equal(st.segments, 0);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.appended, 520);
    assert_int_equal(st.read, 520);
    assert_int_equal(count_segments(f->dir, NULL, 0), 0);

    /* and after everything was deleted, a new segment continues the order */
    append_n(sp, 520, 530);
    expect_n(sp, 520, 530);
    assert_int_equal(px_spool_sync(sp), RL_OK);
    px_spool_close(sp);
    px_spool_close(NULL);
}

static void test_restart_resumes_at_committed_cursor(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 0, 4096);
    append_n(sp, 0, 100);
    expect_n(sp, 0, 40);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    expect_n(sp, 40, 50); /* read but not committed: read again after a restart */
    px_spool_close(sp);

    sp = open_spool(f->dir, 0, 4096);
    assert_int_equal(px_spool_depth(sp), 60);
    append_n(sp, 100, 105);
    assert_int_equal(px_spool_depth(sp), 65);
    expect_n(sp, 40, 105);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    px_spool_close(sp);

    sp = open_spool(f->dir, 0, 4096);
    assert_int_equal(px_spool_depth(sp), 0);
    px_spool_record_t r;
    assert_int_equal(px_spool_peek(sp, &r), RL_ERR_NOT_FOUND);
    append_n(sp, 105, 110);
    px_spool_close(sp);

    /* a restart without any commit since the open replays from the cursor */
    sp = open_spool(f->dir, 0, 4096);
    assert_int_equal(px_spool_depth(sp), 5);
    expect_n(sp, 105, 110);
    px_spool_close(sp);
}

static void test_torn_tail_is_cut(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 10);
    px_spool_close(sp);

    char last[320], path[400];
    assert_int_equal(count_segments(f->dir, last, sizeof last), 1);
    snprintf(path, sizeof path, "%s/%s", f->dir, last);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 5), 0); /* crash in the middle of record 9 */

    sp = open_spool(f->dir, 0, 0);
    assert_int_equal(px_spool_depth(sp), 9);
    px_spool_stats_t ss;
    px_spool_stats(sp, &ss);
    assert_true(ss.truncated_bytes > 0);
    append_n(sp, 9, 12); /* goes after the cut, in a new segment */
    expect_n(sp, 0, 12);
    px_spool_close(sp);
}

static void test_zeroed_and_corrupt_tails_are_cut(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 10);
    px_spool_close(sp);

    char last[320], path[400];
    count_segments(f->dir, last, sizeof last);
    snprintf(path, sizeof path, "%s/%s", f->dir, last);

    /* a power loss can leave a tail of zeroes */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    static const char zeros[300];
    assert_int_equal(write(fd, zeros, sizeof zeros), (ssize_t)sizeof zeros);
    close(fd);
    sp = open_spool(f->dir, 0, 0);
    assert_int_equal(px_spool_depth(sp), 10);
    px_spool_close(sp);

    /* a flipped byte in record 5 fails its CRC: it and what follows are cut */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    long off = 16;
    unsigned char buf[256];
    for (int i = 0; i < 5; i++)
        off += 8 + 4 + (long)strlen(SUBJECT) + snprintf((char *)buf, sizeof buf, "m-%d", i) +
               (long)payload_of(i, buf);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off + 30), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, off + 30), 1);
    close(fd);
    sp = open_spool(f->dir, 0, 0);
    assert_int_equal(px_spool_depth(sp), 5);
    expect_n(sp, 0, 5);
    px_spool_close(sp);
}

static void test_corrupt_cursor_replays_from_oldest(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 0, 4096);
    append_n(sp, 0, 100);
    expect_n(sp, 0, 30);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    px_spool_close(sp);

    char path[160];
    snprintf(path, sizeof path, "%s/cursor", f->dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 20), 1);
    close(fd);

    /* duplicates, never loss: from the oldest segment left on disk */
    sp = open_spool(f->dir, 0, 4096);
    px_spool_record_t r;
    assert_int_equal(px_spool_peek(sp, &r), RL_OK);
    long first = strtol(r.msg_id + 2, NULL, 10);
    assert_true(first <= 30);
    assert_int_equal((int)px_spool_depth(sp), 100 - first);
    expect_n(sp, first, 100);
    px_spool_close(sp);
}

static void test_max_bytes_refuses_then_frees(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 16384, 4096);
    unsigned char buf[256];
    int n = 0;
    rl_status_t st;
    char id[32];
    for (;;) {
        snprintf(id, sizeof id, "m-%d", n);
        st = px_spool_append(sp, SUBJECT, id, buf, payload_of(n, buf));
        if (st != RL_OK)
            break;
        n++;
        assert_true(n < 1000);
    }
    assert_int_equal(st, RL_ERR_TOO_LARGE);
    assert_int_equal(px_spool_append(sp, SUBJECT, "x", "y", 1), RL_ERR_TOO_LARGE);
    px_spool_stats_t ss;
    px_spool_stats(sp, &ss);
    assert_int_equal(ss.refused, 2);
    assert_true(ss.bytes <= 16384);
    assert_int_equal((int)ss.depth, n);

    /* reading and committing frees whole segments */
    expect_n(sp, 0, n / 2);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    append_n(sp, n, n + 10);
    expect_n(sp, n / 2, n + 10);
    px_spool_close(sp);
}

static void test_bad_arguments_and_lock(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = (px_spool_t *)0x1;
    px_spool_options_t o = {0};
    assert_int_equal(px_spool_open(&o, &sp), RL_ERR_INVALID);
    o.dir = f->dir;
    o.max_bytes = -1;
    assert_int_equal(px_spool_open(&o, &sp), RL_ERR_INVALID);
    assert_ptr_equal(sp, (px_spool_t *)0x1);

    o.max_bytes = 0;
    o.record_max = 100;
    sp = NULL;
    assert_int_equal(px_spool_open(&o, &sp), RL_OK);
    px_spool_t *other = (px_spool_t *)0x1;
    assert_int_equal(px_spool_open(&o, &other), RL_ERR_CONFLICT); /* one owner per folder */
    assert_ptr_equal(other, (px_spool_t *)0x1);

    char big[PX_SPOOL_MSG_ID_MAX + 2];
    memset(big, 'i', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(px_spool_append(sp, "", "id", "x", 1), RL_ERR_INVALID);
    assert_int_equal(px_spool_append(sp, SUBJECT, "", "x", 1), RL_ERR_INVALID);
    assert_int_equal(px_spool_append(sp, SUBJECT, big, "x", 1), RL_ERR_INVALID);
    assert_int_equal(px_spool_append(sp, SUBJECT, "id", NULL, 1), RL_ERR_INVALID);
    char payload[101] = {0};
    assert_int_equal(px_spool_append(sp, SUBJECT, "id", payload, 101), RL_ERR_TOO_LARGE);
    assert_int_equal(px_spool_append(sp, SUBJECT, "id", payload, 100), RL_OK);
    assert_int_equal(px_spool_append(sp, SUBJECT, "empty", NULL, 0), RL_OK);
    px_spool_record_t r;
    assert_int_equal(px_spool_peek(sp, &r), RL_OK);
    assert_int_equal(r.len, 100);
    assert_int_equal(px_spool_advance(sp), RL_OK);
    assert_int_equal(px_spool_peek(sp, &r), RL_OK);
    assert_string_equal(r.msg_id, "empty");
    assert_int_equal(r.len, 0);
    px_spool_close(sp);

    /* the lock goes with the close */
    sp = NULL;
    assert_int_equal(px_spool_open(&o, &sp), RL_OK);
    px_spool_close(sp);
}

static void test_sync_every_append(void **state)
{
    fixture_t *f = *state;
    px_spool_options_t o = {.dir = f->dir, .sync_every_append = true, .segment_bytes = 4096};
    px_spool_t *sp = NULL;
    assert_int_equal(px_spool_open(&o, &sp), RL_OK);
    append_n(sp, 0, 100);
    expect_n(sp, 0, 100);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    assert_int_equal(px_spool_sync(sp), RL_OK);
    px_spool_close(sp);
}

/* ---- concurrency: 4 appenders, 1 reader ---- */

#define APPENDERS 4
#define PER_APPENDER 5000

typedef struct {
    px_spool_t *sp;
    int id;
    pthread_barrier_t *start;
} appender_t;

static void *appender_main(void *arg)
{
    appender_t *a = arg;
    char id[32], payload[64];
    pthread_barrier_wait(a->start);
    for (int i = 0; i < PER_APPENDER; i++) {
        snprintf(id, sizeof id, "%d-%d", a->id, i);
        int n = snprintf(payload, sizeof payload, "payload of %d/%d", a->id, i);
        while (px_spool_append(a->sp, SUBJECT, id, payload, (size_t)n) != RL_OK)
            sched_yield(); /* never expected with the bound used here */
    }
    return NULL;
}

static void test_concurrent_appenders_one_reader(void **state)
{
    fixture_t *f = *state;
    px_spool_t *sp = open_spool(f->dir, 64 << 20, 16384);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, APPENDERS + 1);
    appender_t a[APPENDERS];
    pthread_t th[APPENDERS];
    for (int i = 0; i < APPENDERS; i++) {
        a[i] = (appender_t){.sp = sp, .id = i, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, appender_main, &a[i]), 0);
    }
    pthread_barrier_wait(&start);

    int next[APPENDERS] = {0};
    int total = 0, since_commit = 0;
    while (total < APPENDERS * PER_APPENDER) {
        px_spool_record_t r;
        rl_status_t st = px_spool_peek(sp, &r);
        if (st == RL_ERR_NOT_FOUND) {
            sched_yield();
            continue;
        }
        assert_int_equal(st, RL_OK);
        int who = -1, seq = -1;
        assert_int_equal(sscanf(r.msg_id, "%d-%d", &who, &seq), 2);
        assert_true(who >= 0 && who < APPENDERS);
        assert_int_equal(seq, next[who]); /* exactly once, in each appender's order */
        next[who]++;
        char want[64];
        int n = snprintf(want, sizeof want, "payload of %d/%d", who, seq);
        assert_int_equal(r.len, (size_t)n);
        assert_memory_equal(r.data, want, (size_t)n);
        assert_int_equal(px_spool_advance(sp), RL_OK);
        total++;
        if (++since_commit == 300) {
            assert_int_equal(px_spool_commit(sp), RL_OK);
            assert_int_equal(px_spool_sync(sp), RL_OK);
            since_commit = 0;
        }
    }
    for (int i = 0; i < APPENDERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    px_spool_record_t r;
    assert_int_equal(px_spool_peek(sp, &r), RL_ERR_NOT_FOUND);
    assert_int_equal(px_spool_depth(sp), 0);
    assert_int_equal(px_spool_commit(sp), RL_OK);
    px_spool_stats_t ss;
    px_spool_stats(sp, &ss);
    assert_int_equal(ss.appended, APPENDERS * PER_APPENDER);
    assert_int_equal(ss.segments, 0);
    px_spool_close(sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order_across_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_resumes_at_committed_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeroed_and_corrupt_tails_are_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_cursor_replays_from_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_bytes_refuses_then_frees, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments_and_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_every_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_appenders_one_reader, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

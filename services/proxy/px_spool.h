/* px_spool: a bounded on-disk FIFO of bus messages (subject, msg id, payload)
 * for the time NATS cannot take them. The proxy's publisher appends what the
 * bus refused or did not ack and replays it in order once the bus is back; the
 * spool survives a restart of the proxy.
 *
 * On disk (docs/bus.md, "The proxy's spool"): a folder of segment files
 * <seq>.seg, each a 16-byte header ("RLSPOOL1" + the sequence number) and
 * length-prefixed records with a CRC-32 each, plus a file "cursor" holding the
 * committed read position and a "LOCK" file that one process holds at a time.
 * A record torn by a crash fails its CRC and is cut off when the spool opens;
 * segments are deleted once a commit has moved past them.
 *
 * Durability: every append is one write(): a crash of the process loses
 * nothing. Data reaches the disk on px_spool_sync() (the publisher calls it at
 * most every 200 ms), so a crash of the machine loses at most what was
 * appended since the latest sync, unless sync_every_append is set (then each
 * append waits for fdatasync: safer, and milliseconds slower).
 *
 * Threads: px_spool_append(), px_spool_sync(), px_spool_depth() and
 * px_spool_stats() are safe from any thread; px_spool_peek(),
 * px_spool_advance() and px_spool_commit() belong to one reader thread at a
 * time; px_spool_close() must not run concurrently with any other call. */
#ifndef PX_SPOOL_H
#define PX_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_status.h"

/* Longest subject and msg id a record may carry, in bytes. */
#define PX_SPOOL_SUBJECT_MAX 1024
#define PX_SPOOL_MSG_ID_MAX 1024

typedef struct px_spool px_spool_t;

/* Options of px_spool_open(); zero means the default. Borrowed during the
 * call only. */
typedef struct {
    const char *dir;        /* required; created (with its parents) if missing */
    int64_t max_bytes;      /* bound on the segment files' total size; default 1 GiB */
    int64_t segment_bytes;  /* a segment is closed past this size; default max_bytes / 16,
                               at least 4 KiB and at most 64 MiB */
    size_t record_max;      /* largest payload accepted; default 8 MiB */
    bool sync_every_append; /* fdatasync in every append (see above) */
} px_spool_options_t;

/* One record, as px_spool_peek() returns it: every pointer is owned by the
 * spool and valid until the next peek, advance or close. */
typedef struct {
    const char *subject; /* NUL-terminated */
    const char *msg_id;  /* NUL-terminated */
    const void *data;
    size_t len;
} px_spool_record_t;

/* Counters and levels, for metrics and tests. */
typedef struct {
    uint64_t depth;           /* records appended and not yet read (advanced past) */
    uint64_t bytes;           /* total size of the segment files on disk */
    uint64_t segments;        /* segment files on disk */
    uint64_t appended;        /* records appended since open */
    uint64_t read;            /* records advanced past since open */
    uint64_t refused;         /* appends refused since open because max_bytes was reached */
    uint64_t corrupt;         /* records lost to corruption found while reading (not torn
                                 tails, which are cut silently when opening) */
    uint64_t truncated_bytes; /* bytes of torn tails cut when opening */
} px_spool_stats_t;

/* Opens (or creates) the spool in o->dir: takes the folder's lock, deletes the
 * segments that the committed cursor has passed, cuts torn tails and counts
 * the records left after the cursor (reading every segment once). *out is set
 * only on success (free with px_spool_close). RL_ERR_INVALID for missing or
 * bad options, RL_ERR_CONFLICT when another process (or another open spool in
 * this one) holds the folder, RL_ERR_IO, RL_ERR_NOMEM. */
rl_status_t px_spool_open(const px_spool_options_t *o, px_spool_t **out);

/* Syncs, closes and frees. What was not committed stays for the next open,
 * which reads it again (at-least-once). NULL does nothing. */
void px_spool_close(px_spool_t *sp);

/* Appends one record after all others. subject and msg_id are C strings of
 * 1..PX_SPOOL_SUBJECT_MAX / PX_SPOOL_MSG_ID_MAX bytes; data is copied.
 * RL_ERR_TOO_LARGE (and the record is counted as refused) when max_bytes
 * would be passed, or len is above record_max; RL_ERR_INVALID for bad
 * arguments; RL_ERR_IO when the write fails (nothing of the record stays). */
rl_status_t px_spool_append(px_spool_t *sp, const char *subject, const char *msg_id,
                            const void *data, size_t len);

/* The oldest record not yet read, without consuming it: calling it again
 * returns the same record. RL_ERR_NOT_FOUND when the spool is empty,
 * RL_ERR_IO, RL_ERR_NOMEM. A record found corrupt is skipped with the rest of
 * its segment (counted in stats.corrupt). Reader thread only. */
rl_status_t px_spool_peek(px_spool_t *sp, px_spool_record_t *rec);

/* Consumes the record of the latest successful px_spool_peek(): depth drops
 * by one. In memory only until px_spool_commit(). RL_ERR_INVALID without a
 * peeked record. Reader thread only. */
rl_status_t px_spool_advance(px_spool_t *sp);

/* Makes the read position the committed one: writes it to the cursor file
 * (synced with the next px_spool_sync()) and deletes the segments fully
 * before it, so a restart resumes there. Commit only what the bus has taken
 * for good. RL_ERR_IO. Reader thread only. */
rl_status_t px_spool_commit(px_spool_t *sp);

/* fdatasyncs what was written since the latest sync (segments, cursor, the
 * folder's entries) without holding the spool's lock while the disk works.
 * RL_ERR_IO. */
rl_status_t px_spool_sync(px_spool_t *sp);

/* Records appended and not yet read; lock-free. */
uint64_t px_spool_depth(const px_spool_t *sp);

/* Copies the counters into *out. */
void px_spool_stats(px_spool_t *sp, px_spool_stats_t *out);

#endif

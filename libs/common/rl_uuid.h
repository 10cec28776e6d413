/* rl_uuid: UUIDs, generated as version 7 (RFC 9562): a 48-bit Unix
 * millisecond timestamp, a 12-bit counter, 62 random bits. Ids from one
 * process sort in the order they were generated, across threads too, so they
 * make good primary keys and bus message ids. */
#ifndef RL_UUID_H
#define RL_UUID_H

#include <stdint.h>

#include "rl_status.h"

/* The 16 bytes in network order, as RFC 9562 lays them out; compare with
 * rl_uuid_cmp (byte order is time order for version 7). */
typedef struct {
    uint8_t b[16];
} rl_uuid_t;

/* Length of the canonical text form, without its NUL. */
#define RL_UUID_STR_LEN 36

/* Writes a new version 7 UUID to *out. Each id is greater than every id this
 * process generated before it, also within one millisecond and across
 * threads: the rand_a field counts from a random start below 2048 in each new
 * millisecond, and a counter overflow (more than about 2 million ids a
 * second) or a wall clock stepping back moves the embedded timestamp ahead of
 * the clock instead of backwards. Lock-free and thread-safe.
 * RL_ERR_CRYPTO when the random generator fails, RL_ERR_IO when the clock
 * does; *out is then untouched. */
rl_status_t rl_uuid_v7(rl_uuid_t *out);

/* Writes the canonical lower-case form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
 * and a NUL to out. */
void rl_uuid_format(const rl_uuid_t *u, char out[RL_UUID_STR_LEN + 1]);

/* Parses exactly the canonical form (hex digits of either case, hyphens at
 * offsets 8, 13, 18 and 23, NUL at 36; no braces, no "urn:uuid:") of any
 * version. RL_ERR_INVALID otherwise; *out is then untouched. */
rl_status_t rl_uuid_parse(const char *s, rl_uuid_t *out);

/* The Unix millisecond timestamp of a version 7 UUID; 0 when u is not a
 * version 7, RFC 9562-variant UUID. */
uint64_t rl_uuid_v7_ms(const rl_uuid_t *u);

/* Orders a and b by their bytes: <0, 0 or >0 like memcmp. */
int rl_uuid_cmp(const rl_uuid_t *a, const rl_uuid_t *b);

#endif

/* api_migrate: applies migrations/NNNN_name.sql files that the database has
 * not seen yet, in order, each in its own transaction, under a PostgreSQL
 * advisory lock so concurrent runs (several api replicas starting at once)
 * apply each file exactly once. */
#ifndef API_MIGRATE_H
#define API_MIGRATE_H

#include <stddef.h>

#include "rl_pg.h"

/* Key of the session advisory lock held while migrating. */
#define API_MIGRATE_LOCK_KEY 0x52454e4c4159ULL /* "RENLAY" */

typedef struct {
    size_t applied; /* files applied by this run */
    size_t skipped; /* files that were applied before */
    int latest;     /* highest version applied now, 0 if none */
} api_migrate_result_t;

/* Applies every pending migration in dir to the database behind pg (borrowed;
 * must not be inside a transaction). A file applied earlier whose content
 * changed since is an error (RL_ERR_CONFLICT): migrations are forward-only,
 * fix with a new file. RL_ERR_INVALID for a badly named or unreadable file,
 * RL_ERR_IO/RL_ERR_UNAVAILABLE for database errors (the failing file is
 * named in rl_error_last(); nothing of it is applied). */
rl_status_t api_migrate_run(rl_pg_t *pg, const char *dir, api_migrate_result_t *out);

#endif

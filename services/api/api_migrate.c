#include "api_migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_buf.h"
#include "rl_crypto.h"

#define MAX_MIGRATIONS 512
#define MAX_MIGRATION_BYTES (4u << 20)

typedef struct {
    int version;
    char name[256]; /* file name */
} migration_t;

static int by_version(const void *a, const void *b)
{
    const migration_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* "0003_traces.sql" -> 3; -1 for names that are not migrations. */
static int version_of(const char *name)
{
    size_t n = strlen(name);
    if (n < 10 || strcmp(name + n - 4, ".sql") != 0)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        v = v * 10 + (name[i] - '0');
    }
    return name[4] == '_' ? v : -1;
}

static rl_status_t list_migrations(const char *dir, migration_t *out, size_t *n)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return rl_error(RL_ERR_INVALID, "migrations folder %s: %s", dir, strerror(errno));
    *n = 0;
    struct dirent *e;
    rl_status_t st = RL_OK;
    while ((e = readdir(d)) != NULL && st == RL_OK) {
        if (e->d_name[0] == '.')
            continue;
        int v = version_of(e->d_name);
        if (v < 0) {
            if (strstr(e->d_name, ".sql"))
                st = rl_error(RL_ERR_INVALID, "%s: migration files are named NNNN_name.sql",
                              e->d_name);
            continue;
        }
        if (*n >= MAX_MIGRATIONS || strlen(e->d_name) >= sizeof out[0].name) {
            st = rl_error(RL_ERR_INVALID, "too many migrations or name too long: %s", e->d_name);
            break;
        }
        out[*n].version = v;
        snprintf(out[*n].name, sizeof out[*n].name, "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (st != RL_OK)
        return st;
    qsort(out, *n, sizeof *out, by_version);
    for (size_t i = 1; i < *n; i++) {
        if (out[i].version == out[i - 1].version)
            return rl_error(RL_ERR_INVALID, "two migrations with version %04d: %s and %s",
                            out[i].version, out[i - 1].name, out[i].name);
    }
    return RL_OK;
}

static rl_status_t read_file(const char *dir, const char *name, rl_buf_t *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return rl_error(RL_ERR_INVALID, "%s: %s", path, strerror(errno));
    char chunk[8192];
    size_t got;
    rl_status_t st = RL_OK;
    while (st == RL_OK && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        st = rl_buf_append(out, chunk, got);
    if (st == RL_OK && ferror(f))
        st = rl_error(RL_ERR_INVALID, "%s: read error", path);
    fclose(f);
    return st;
}

static rl_status_t checksum_hex(const rl_buf_t *sql, char out[65])
{
    uint8_t digest[RL_SHA256_LEN];
    rl_status_t st = rl_sha256(sql->data ? sql->data : "", sql->len, digest);
    if (st == RL_OK)
        st = rl_hex_encode(digest, sizeof digest, out, 65);
    return st;
}

static const char *const bootstrap_sql =
    "CREATE SCHEMA IF NOT EXISTS renlayer;"
    "CREATE TABLE IF NOT EXISTS renlayer.schema_migrations ("
    "  version integer PRIMARY KEY,"
    "  name text NOT NULL,"
    "  checksum text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now())";

/* Applies one file unless it is recorded; verifies the checksum if it is. */
static rl_status_t apply_one(rl_pg_t *pg, const char *dir, const migration_t *m,
                             api_migrate_result_t *res)
{
    rl_buf_t sql;
    rl_buf_init(&sql, MAX_MIGRATION_BYTES);
    char sum[65];
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    rl_status_t st = read_file(dir, m->name, &sql);
    if (st == RL_OK)
        st = checksum_hex(&sql, sum);
    PGresult *r = NULL;
    if (st == RL_OK) {
        const char *p[] = {version};
        st = rl_pg_query(pg, "SELECT checksum FROM renlayer.schema_migrations WHERE version = $1",
                         1, p, &r);
    }
    if (st == RL_OK && PQntuples(r) == 1) {
        if (strcmp(PQgetvalue(r, 0, 0), sum) != 0)
            st = rl_error(RL_ERR_CONFLICT,
                          "%s was changed after it was applied: migrations are forward-only, "
                          "add a new file instead",
                          m->name);
        res->skipped++;
        PQclear(r);
        rl_buf_free(&sql);
        return st;
    }
    PQclear(r);
    r = NULL;
    if (st == RL_OK)
        st = rl_pg_begin(pg);
    if (st == RL_OK) {
        st = rl_pg_exec_simple(pg, sql.data ? sql.data : "");
        if (st != RL_OK)
            st = rl_error(st, "%s: %s", m->name, rl_error_last());
    }
    if (st == RL_OK) {
        const char *p[] = {version, m->name, sum};
        st = rl_pg_query(pg,
                         "INSERT INTO renlayer.schema_migrations (version, name, checksum) "
                         "VALUES ($1, $2, $3)",
                         3, p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = rl_pg_commit(pg);
    else
        rl_pg_rollback(pg);
    if (st == RL_OK)
        res->applied++;
    rl_buf_free(&sql);
    return st;
}

rl_status_t api_migrate_run(rl_pg_t *pg, const char *dir, api_migrate_result_t *out)
{
    migration_t *list = calloc(MAX_MIGRATIONS, sizeof *list);
    if (list == NULL)
        return rl_error(RL_ERR_NOMEM, "migration list");
    size_t n = 0;
    api_migrate_result_t res = {0};
    rl_status_t st = list_migrations(dir, list, &n);
    if (st == RL_OK)
        st = rl_pg_advisory_lock(pg, (int64_t)API_MIGRATE_LOCK_KEY);
    if (st != RL_OK) {
        free(list);
        return st;
    }
    st = rl_pg_exec_simple(pg, bootstrap_sql);
    for (size_t i = 0; i < n && st == RL_OK; i++) {
        st = apply_one(pg, dir, &list[i], &res);
        if (st == RL_OK)
            res.latest = list[i].version;
    }
    rl_status_t unlock = rl_pg_advisory_unlock(pg, (int64_t)API_MIGRATE_LOCK_KEY);
    if (st == RL_OK && unlock != RL_OK)
        st = unlock;
    free(list);
    if (st == RL_OK && out)
        *out = res;
    return st;
}

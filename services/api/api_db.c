#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rl_json.h"
#include "rl_uuid.h"

rl_status_t api_query_json(rl_pg_t *pg, const char *sql, int n, const char *const *params,
                           json_t **out)
{
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(pg, sql, n, params, &r);
    if (st != RL_OK)
        return st;
    if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0)) {
        PQclear(r);
        return rl_error(RL_ERR_NOT_FOUND, "no row");
    }
    const char *text = PQgetvalue(r, 0, 0);
    st = rl_json_parse(text, strlen(text), 0, out);
    PQclear(r);
    return st;
}

rl_status_t api_audit(rl_pg_t *pg, const api_actor_t *actor, const char *action,
                      const char *target_type, const char *target_id, const json_t *before,
                      const json_t *after)
{
    json_t *diff = json_pack("{s:O?,s:O?}", "before", before, "after", after);
    char *diff_text = diff ? json_dumps(diff, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(diff);
    if (diff_text == NULL)
        return rl_error(RL_ERR_NOMEM, "audit diff");
    char id[40];
    api_new_id(id);
    const char *p[] = {
        id,
        actor->tenant_id[0] ? actor->tenant_id : NULL,
        actor->operator_id[0] ? actor->operator_id : NULL,
        actor->operator_email[0] ? actor->operator_email : NULL,
        actor->token_id[0] ? actor->token_id : NULL,
        action,
        target_type,
        target_id,
        diff_text,
        actor->client_addr && actor->client_addr[0] ? actor->client_addr : NULL,
        actor->request_id,
    };
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(
        pg,
        "INSERT INTO renlayer.audit_log (id, tenant_id, operator_id, operator_email, "
        "operator_token_id, action, target_type, target_id, diff, client_addr, request_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::inet, $11)",
        11, p, &r);
    PQclear(r);
    free(diff_text);
    return st;
}

void api_new_id(char out[40])
{
    rl_uuid_t id;
    rl_uuid_v7(&id);
    rl_uuid_format(&id, out);
}

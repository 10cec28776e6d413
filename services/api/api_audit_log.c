/* The audit log, read side: GET /v1/audit with filters and pagination. */
#include <string.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"

void api_audit_list(rl_http_request_t *req, void *ctx)
{
    api_page_t page;
    if (!api_page_parse(req, &page))
        return;
    const char *target = rl_http_query(req, "target");
    const char *op = rl_http_query(req, "operator");
    const char *from = rl_http_query(req, "from");
    const char *to = rl_http_query(req, "to");
    json_t *errors = json_object();
    if (op && *op && !api_valid_uuid(op))
        api_field_error(errors, "operator", "must be an operator id");
    if (from && *from && !api_valid_timestamp(from))
        api_field_error(errors, "from", "must be an ISO 8601 timestamp");
    if (to && *to && !api_valid_timestamp(to))
        api_field_error(errors, "to", "must be an ISO 8601 timestamp");
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid filter", errors);
        return;
    }
    json_decref(errors);
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id,
                       page.after[0] ? page.after : NULL,
                       page.limit_plus_one,
                       target && *target ? target : NULL,
                       op && *op ? op : NULL,
                       from && *from ? from : NULL,
                       to && *to ? to : NULL};
    {
        api_respond_page(req, call.pg, &page,
                         "SELECT l.id::text, " API_AUDIT_JSON " FROM renlayer.audit_log l "
                         "WHERE l.tenant_id = $1 AND ($2::uuid IS NULL OR l.id < $2::uuid) "
                         "AND ($4::text IS NULL OR l.target_id = $4) "
                         "AND ($5::uuid IS NULL OR l.operator_id = $5::uuid) "
                         "AND ($6::timestamptz IS NULL OR l.at >= $6::timestamptz) "
                         "AND ($7::timestamptz IS NULL OR l.at < $7::timestamptz) "
                         "ORDER BY l.id DESC LIMIT $3",
                         7, p);
    }
    api_call_end(&call);
}

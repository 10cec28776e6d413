/* GET /v1/openapi.json: the API's OpenAPI 3.1 document, compiled into the
 * binary from services/api/openapi.json (see CMakeLists.txt). */
#include "api_routes.h"
#include "api_openapi_data.h"

void api_openapi_get(rl_http_request_t *req, void *ctx)
{
    (void)ctx;
    rl_http_set_header(req, "Cache-Control", "public, max-age=300");
    rl_http_respond(req, 200, "application/json", api_openapi_json, api_openapi_json_len);
}

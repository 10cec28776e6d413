/* rl_http against a real libcurl client on loopback: routing, parameters,
 * bounded bodies, uniform errors, request ids and the built-in endpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_buf.h"
#include "rl_http.h"
#include "rl_log.h"

static bool ready_flag = true;

static void echo_params(rl_http_request_t *req, void *ctx)
{
    (void)ctx;
    rl_http_respond_json(req, 200,
                         json_pack("{s:s?,s:s?,s:s?,s:s?}", "id", rl_http_param(req, "id"), "key_id",
                                   rl_http_param(req, "key_id"), "limit",
                                   rl_http_query(req, "limit"), "x", rl_http_header(req, "X-Thing")));
}

static void create_thing(rl_http_request_t *req, void *ctx)
{
    (void)ctx;
    json_t *body = rl_http_json_body(req);
    if (body == NULL)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    if (name == NULL) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid thing",
                              json_pack("{s:s}", "name", "is required"));
        return;
    }
    rl_http_set_header(req, "Location", "/things/1");
    rl_http_respond_json(req, 201, json_pack("{s:s}", "name", name));
}

static void forgets_to_respond(rl_http_request_t *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

static bool is_ready(void *ctx, json_t *checks)
{
    (void)ctx;
    json_object_set_new(checks, "thing", json_string(ready_flag ? "up" : "down"));
    return ready_flag;
}

static const rl_http_route_t routes[] = {
    {"GET", "/v1/agents/{id}", echo_params},
    {"GET", "/v1/agents/{id}/keys/{key_id}", echo_params},
    {"POST", "/v1/things", create_thing},
    {"GET", "/v1/broken", forgets_to_respond},
};

typedef struct {
    rl_http_server_t *srv;
    rl_metrics_t *metrics;
} fixture_t;

typedef struct {
    long status;
    rl_buf_t body;
    rl_buf_t headers;
} response_t;

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    rl_buf_append(ud, p, size * n);
    return size * n;
}

static fixture_t fx;

static void request(const char *method, const char *path, const char *body, long body_len,
                    const char *header, response_t *out)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", rl_http_server_port(fx.srv), path);
    rl_buf_init(&out->body, 1 << 20);
    rl_buf_init(&out->headers, 1 << 16);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Expect:");
    if (header)
        h = curl_slist_append(h, header);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &out->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, body_len);
    }
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static json_t *body_json(response_t *r)
{
    json_error_t err;
    json_t *v = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &err);
    assert_non_null(v);
    return v;
}

static void response_free(response_t *r)
{
    rl_buf_free(&r->body);
    rl_buf_free(&r->headers);
}

static int setup(void **state)
{
    (void)state;
    rl_log_init("test", RL_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rl_metrics_create(&fx.metrics) != RL_OK)
        return -1;
    rl_http_options_t o = {
        .service = "test",
        .listen_addr = "127.0.0.1:0",
        .routes = routes,
        .nroutes = sizeof routes / sizeof routes[0],
        .ready = is_ready,
        .metrics = fx.metrics,
        .max_body = 1024,
        .threads = 2,
    };
    return rl_http_server_start(&o, &fx.srv) == RL_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rl_http_server_stop(fx.srv);
    rl_metrics_destroy(fx.metrics);
    curl_global_cleanup();
    return 0;
}

static void routes_with_parameters(void **state)
{
    (void)state;
    response_t r;
    request("GET", "/v1/agents/abc/keys/k1?limit=5", NULL, 0, "X-Thing: yes", &r);
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(v, "id")), "abc");
    assert_string_equal(json_string_value(json_object_get(v, "key_id")), "k1");
    assert_string_equal(json_string_value(json_object_get(v, "limit")), "5");
    assert_string_equal(json_string_value(json_object_get(v, "x")), "yes");
    json_decref(v);
    response_free(&r);

    request("GET", "/v1/agents/xyz", NULL, 0, NULL, &r);
    v = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(v, "id")), "xyz");
    assert_true(json_is_null(json_object_get(v, "key_id")));
    json_decref(v);
    response_free(&r);
}

static void unknown_paths_and_methods(void **state)
{
    (void)state;
    response_t r;
    const char *paths[] = {"/v1/agents", "/v1/agents/", "/v1/agents/a/b", "/nope", "/v1/agents//keys/x"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        request("GET", paths[i], NULL, 0, NULL, &r);
        assert_int_equal(r.status, 404);
        json_t *v = body_json(&r);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(v, "error"), "code")), "not_found");
        json_decref(v);
        response_free(&r);
    }
    request("DELETE", "/v1/things", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    response_free(&r);
}

static void json_bodies_and_validation(void **state)
{
    (void)state;
    response_t r;
    request("POST", "/v1/things", "{\"name\":\"a\"}", -1, "Content-Type: application/json", &r);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.headers.data, "Location: /things/1"));
    response_free(&r);

    request("POST", "/v1/things", "{\"other\":1}", -1, NULL, &r);
    assert_int_equal(r.status, 400);
    json_t *v = body_json(&r);
    json_t *err = json_object_get(v, "error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "validation_failed");
    assert_string_equal(json_string_value(json_object_get(json_object_get(err, "fields"), "name")),
                        "is required");
    assert_non_null(json_object_get(err, "request_id"));
    json_decref(v);
    response_free(&r);

    const char *bad[] = {"{", "[1]", "", "{\"name\":\"a\",\"name\":\"b\"}", "nul"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        request("POST", "/v1/things", bad[i], (long)strlen(bad[i]), NULL, &r);
        assert_int_equal(r.status, 400);
        v = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(json_object_get(v, "error"), "code")),
                            "invalid_json");
        json_decref(v);
        response_free(&r);
    }
}

static void oversized_bodies_get_413(void **state)
{
    (void)state;
    char big[4096];
    memset(big, 'a', sizeof big);
    response_t r;
    request("POST", "/v1/things", big, sizeof big, NULL, &r);
    assert_int_equal(r.status, 413);
    json_t *v = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "error"), "code")),
                        "body_too_large");
    json_decref(v);
    response_free(&r);
    /* chunked, no Content-Length: refused while reading */
    request("POST", "/v1/things", big, sizeof big, "Transfer-Encoding: chunked", &r);
    assert_int_equal(r.status, 413);
    response_free(&r);
}

static void request_ids(void **state)
{
    (void)state;
    response_t r;
    request("GET", "/v1/agents/a", NULL, 0, "X-Request-Id: my-id-123", &r);
    assert_non_null(strstr(r.headers.data, "X-Request-Id: my-id-123"));
    response_free(&r);
    request("GET", "/v1/agents/a", NULL, 0, "X-Request-Id: bad id\x01", &r);
    assert_null(strstr(r.headers.data, "bad id"));
    assert_non_null(strstr(r.headers.data, "X-Request-Id: "));
    response_free(&r);
}

static void handler_without_response_gets_500(void **state)
{
    (void)state;
    response_t r;
    request("GET", "/v1/broken", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 500);
    response_free(&r);
}

static void health_readiness_and_metrics(void **state)
{
    (void)state;
    response_t r;
    request("GET", "/healthz", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
    ready_flag = false;
    request("GET", "/readyz", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body.data, "\"thing\":\"down\""));
    response_free(&r);
    ready_flag = true;
    request("GET", "/readyz", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
    request("GET", "/metrics", NULL, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body.data, "http_requests_total{code=\"200\"}"));
    assert_non_null(strstr(r.body.data, "http_requests_total{code=\"413\"}"));
    assert_non_null(strstr(r.body.data, "http_request_duration_seconds_count"));
    response_free(&r);
}

static void bad_listen_address_is_refused(void **state)
{
    (void)state;
    rl_http_server_t *srv = NULL;
    rl_http_options_t o = {.listen_addr = "nonsense", .metrics = fx.metrics};
    assert_int_equal(rl_http_server_start(&o, &srv), RL_ERR_INVALID);
    assert_null(srv);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", rl_http_server_port(fx.srv));
    o.listen_addr = addr; /* in use */
    assert_int_equal(rl_http_server_start(&o, &srv), RL_ERR_IO);
    assert_null(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routes_with_parameters),
        cmocka_unit_test(unknown_paths_and_methods),
        cmocka_unit_test(json_bodies_and_validation),
        cmocka_unit_test(oversized_bodies_get_413),
        cmocka_unit_test(request_ids),
        cmocka_unit_test(handler_without_response_gets_500),
        cmocka_unit_test(health_readiness_and_metrics),
        cmocka_unit_test(bad_listen_address_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

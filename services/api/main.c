/* renlayer-api: the operators' REST API, and the commands that manage the
 * database and bootstrap tenants.
 *
 *   renlayer-api                       serve the API (the default)
 *   renlayer-api migrate               apply pending migrations
 *   renlayer-api create-tenant --name N --owner-email E
 *   renlayer-api seed-demo --email E --upstream URL [--header Name=Value]... [--out FILE]
 *   renlayer-api routes                print the route table (JSON lines)
 *   renlayer-api --help-config         print the settings table
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_migrate.h"
#include "api_resources.h"
#include "api_auth.h"
#include "api_routes.h"
#include "rl_apikey.h"
#include "rl_log.h"

#ifndef RL_DEFAULT_MIGRATIONS_DIR
#define RL_DEFAULT_MIGRATIONS_DIR "/usr/share/renlayer/migrations"
#endif

typedef struct {
    const char *signup;
    const char *database_url;
    const char *migrations_dir;
    bool dev_mode;
    bool has_secret;
    bool has_jwt;
    rl_log_level_t log_level;
} cli_config_t;

static cli_config_t cfg;
static api_t api;

static const rl_config_option_t api_options[] = {
    {"RENLAYER_SECRET_KEY", RL_CFG_HEXKEY, NULL, true,
     "32 bytes as 64 hex characters: seals upstream secrets, keys the hashes of API keys",
     0, 0, NULL, api.secret_key},
    {"RENLAYER_JWT_SECRET", RL_CFG_HEXKEY, NULL, false,
     "32 bytes as 64 hex characters signing login sessions (default: derived from the secret key)",
     0, 0, NULL, api.jwt_key},
    {"RENLAYER_DEV_MODE", RL_CFG_BOOL, "false", false,
     "development mode: login codes written to the log, cookies without Secure", 0, 0, NULL,
     &cfg.dev_mode},
    {"RENLAYER_MIGRATIONS_DIR", RL_CFG_STRING, RL_DEFAULT_MIGRATIONS_DIR, false,
     "folder of the NNNN_name.sql migrations", 0, 0, NULL, &cfg.migrations_dir},
    {"RENLAYER_SIGNUP", RL_CFG_ENUM, "closed", false,
     "`open` lets anyone create a tenant with POST /v1/tenants; `closed` (default) does not", 0, 0,
     "closed,open", &cfg.signup},
    {"RENLAYER_SMTP_URL", RL_CFG_URL, NULL, false,
     "SMTP server for login codes (smtp://host:587 with STARTTLS, or smtps://host:465)", 0, 0,
     "smtp,smtps", &api.smtp_url},
    {"RENLAYER_SMTP_FROM", RL_CFG_STRING, "RenLayer <no-reply@renlayer.local>", false,
     "From address of login code mails", 0, 0, NULL, &api.smtp_from},
    {"RENLAYER_SMTP_USER", RL_CFG_STRING, NULL, false, "SMTP user name", 0, 0, NULL,
     &api.smtp_user},
    {"RENLAYER_SMTP_PASSWORD", RL_CFG_STRING, NULL, false, "SMTP password", 0, 0, NULL,
     &api.smtp_password},
    {"RENLAYER_SESSION_TTL_S", RL_CFG_INT, "43200", false,
     "lifetime of a console login session in seconds", 300, 2592000, NULL, &api.session_ttl_s},
};
#define NUM_API_OPTIONS (sizeof api_options / sizeof api_options[0])

static void derive_keys(void)
{
    static const uint8_t zero[32];
    rl_apikey_derive_hash_key(api.secret_key, api.hash_key);
    if (memcmp(api.jwt_key, zero, sizeof zero) == 0) {
        static const char label[] = "renlayer/jwt/v1";
        rl_hmac_sha256(api.secret_key, 32, label, sizeof label - 1, api.jwt_key);
    }
    api.dev_mode = cfg.dev_mode;
    api.signup_open = cfg.signup && strcmp(cfg.signup, "open") == 0;
}

/* Reads the settings a command needs; prints every problem. */
static bool load_cli_config(bool need_secret)
{
    rl_config_option_t opts[2 + NUM_API_OPTIONS] = {
        {"RENLAYER_DATABASE_URL", RL_CFG_URL, NULL, true, "PostgreSQL connection URL", 0, 0,
         "postgres,postgresql", &cfg.database_url},
        {"RENLAYER_LOG_LEVEL", RL_CFG_LOGLEVEL, "info", false, "log level", 0, 0, NULL,
         &cfg.log_level},
    };
    size_t n = 2;
    for (size_t i = 0; i < NUM_API_OPTIONS; i++) {
        opts[n] = api_options[i];
        if (!need_secret && strcmp(opts[n].name, "RENLAYER_SECRET_KEY") == 0)
            opts[n].required = false;
        n++;
    }
    char errors[2048];
    if (rl_config_load(opts, n, errors, sizeof errors) != RL_OK) {
        fprintf(stderr, "renlayer-api: invalid configuration:\n%s\n", errors);
        return false;
    }
    rl_log_init("renlayer-api", cfg.log_level);
    derive_keys();
    return true;
}

static rl_status_t connect_db(rl_pg_t **out)
{
    rl_pg_options_t o = {.application_name = "renlayer-api-cli"};
    rl_status_t st = rl_pg_create(cfg.database_url, &o, out);
    if (st == RL_OK) {
        st = rl_pg_connect(*out, 30000);
        if (st != RL_OK) {
            rl_pg_destroy(*out);
            *out = NULL;
        }
    }
    return st;
}

static int cmd_migrate(void)
{
    if (!load_cli_config(false))
        return 2;
    rl_pg_t *pg = NULL;
    rl_status_t st = connect_db(&pg);
    api_migrate_result_t res = {0};
    if (st == RL_OK)
        st = api_migrate_run(pg, cfg.migrations_dir, &res);
    rl_pg_destroy(pg);
    if (st != RL_OK) {
        rl_log(RL_LOG_ERROR, "migration failed", "{s:s,s:s}", "status", rl_status_str(st),
               "detail", rl_error_last());
        return 1;
    }
    rl_log(RL_LOG_INFO, "migrations applied", "{s:i,s:i,s:i}", "applied", (int)res.applied,
           "already_applied", (int)res.skipped, "version", res.latest);
    return 0;
}

static const char *arg_value(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    }
    return NULL;
}

static void print_failure(const char *what, rl_status_t st, json_t *errors)
{
    char *fields = json_object_size(errors) ? json_dumps(errors, JSON_COMPACT) : NULL;
    fprintf(stderr, "renlayer-api: %s failed: %s%s%s\n", what,
            st == RL_ERR_INVALID && fields ? "invalid " : rl_error_last(),
            fields ? fields : "", "");
    free(fields);
}

static int cmd_create_tenant(int argc, char **argv)
{
    const char *name = arg_value(argc, argv, "--name");
    const char *email = arg_value(argc, argv, "--owner-email");
    if (!name || !email) {
        fprintf(stderr, "usage: renlayer-api create-tenant --name NAME --owner-email EMAIL\n");
        return 2;
    }
    if (!load_cli_config(true))
        return 2;
    rl_pg_t *pg = NULL;
    json_t *errors = json_object(), *out = NULL;
    rl_status_t st = connect_db(&pg);
    if (st == RL_OK)
        st = api_tenant_create(&api, pg, name, email, errors, &out);
    rl_pg_destroy(pg);
    if (st != RL_OK) {
        print_failure("create-tenant", st, errors);
        json_decref(errors);
        return 1;
    }
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    json_decref(errors);
    return 0;
}

/* Seeds a demo tenant, owner, operator token, agent (with its first key) and
 * a default gate, and writes the secrets as KEY=value lines to --out (or
 * stdout). Everything goes through the same functions as the API routes. */
static int cmd_seed_demo(int argc, char **argv)
{
    const char *email = arg_value(argc, argv, "--email");
    const char *upstream = arg_value(argc, argv, "--upstream");
    const char *out_path = arg_value(argc, argv, "--out");
    if (!email || !upstream) {
        fprintf(stderr, "usage: renlayer-api seed-demo --email EMAIL --upstream URL "
                        "[--header Name=Value]... [--out FILE]\n");
        return 2;
    }
    if (!load_cli_config(true))
        return 2;
    json_t *headers = json_object();
    for (int i = 0; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--header") != 0)
            continue;
        const char *eq = strchr(argv[i + 1], '=');
        if (eq == NULL || eq == argv[i + 1]) {
            fprintf(stderr, "renlayer-api: --header takes Name=Value\n");
            json_decref(headers);
            return 2;
        }
        char name[129];
        snprintf(name, sizeof name, "%.*s", (int)(eq - argv[i + 1]), argv[i + 1]);
        json_object_set_new(headers, name, json_string(eq + 1));
    }

    rl_pg_t *pg = NULL;
    json_t *errors = json_object();
    json_t *tenant = NULL, *token = NULL, *agent = NULL, *gate = NULL;
    api_actor_t actor = {.role = "owner"};
    rl_status_t st = connect_db(&pg);
    if (st == RL_OK)
        st = api_tenant_create(&api, pg, "Demo", email, errors, &tenant);
    if (st == RL_OK) {
        snprintf(actor.tenant_id, sizeof actor.tenant_id, "%s",
                 json_string_value(json_object_get(json_object_get(tenant, "tenant"), "id")));
        const char *owner_id =
            json_string_value(json_object_get(json_object_get(tenant, "owner"), "id"));
        st = api_operator_token_create(&api, pg, &actor, owner_id, "demo", NULL, errors, &token);
    }
    if (st == RL_OK) {
        json_t *in = json_pack("{s:s,s:s,s:{s:f,s:i}}", "name", "demo-agent", "description",
                               "Created by make run", "session", "soft_limit_usd", 5.0,
                               "idle_timeout_s", 1800);
        st = api_agent_create(&api, pg, &actor, in, errors, &agent);
        json_decref(in);
    }
    if (st == RL_OK) {
        const char *agent_id =
            json_string_value(json_object_get(json_object_get(agent, "agent"), "id"));
        json_t *in = json_pack("{s:s,s:s,s:s,s:b,s:O}", "name", "default", "kind", "openai",
                               "upstream_url", upstream, "is_default", 1, "headers", headers);
        st = api_gate_create(&api, pg, &actor, agent_id, in, errors, &gate);
        json_decref(in);
    }
    rl_pg_destroy(pg);
    int rc = 0;
    if (st != RL_OK) {
        print_failure("seed-demo", st, errors);
        rc = 1;
    } else {
        FILE *f = out_path ? fopen(out_path, "w") : stdout;
        if (f == NULL) {
            perror(out_path);
            rc = 1;
        } else {
            fprintf(f,
                    "RENLAYER_DEMO_TENANT_ID=%s\nRENLAYER_DEMO_OPERATOR_EMAIL=%s\n"
                    "RENLAYER_DEMO_OPERATOR_TOKEN=%s\nRENLAYER_DEMO_AGENT_ID=%s\n"
                    "RENLAYER_DEMO_AGENT_KEY=%s\nRENLAYER_DEMO_GATE_ID=%s\n",
                    actor.tenant_id,
                    json_string_value(json_object_get(json_object_get(tenant, "owner"), "email")),
                    json_string_value(json_object_get(token, "secret")),
                    json_string_value(json_object_get(json_object_get(agent, "agent"), "id")),
                    json_string_value(json_object_get(json_object_get(agent, "key"), "secret")),
                    json_string_value(json_object_get(gate, "id")));
            if (f != stdout)
                fclose(f);
            rl_log(RL_LOG_INFO, "demo seeded", "{s:s}", "tenant_id", actor.tenant_id);
        }
    }
    json_decref(headers);
    json_decref(errors);
    json_decref(tenant);
    json_decref(token);
    json_decref(agent);
    json_decref(gate);
    return rc;
}

/* Keys and the connection pool, made before the first request is served
 * (a request that came in first found no pool: 503). */
static rl_status_t before_serve(rl_service_t *svc, void *ctx)
{
    api_t *a = ctx;
    derive_keys();
    a->svc = svc;
    rl_pg_options_t po = {.application_name = "renlayer-api"};
    return rl_pg_pool_create(rl_service_database_url(svc), 8, &po, &a->db);
}

static int cmd_serve(int argc, char **argv)
{
    size_t nroutes = 0;
    const rl_http_route_t *routes = api_routes(&nroutes);
    const rl_service_spec_t spec = {
        .name = "api",
        .default_listen_addr = "127.0.0.1:8081",
        .uses_db = true,
        .uses_bus = true,
        .options = api_options,
        .noptions = NUM_API_OPTIONS,
        .routes = routes,
        .nroutes = nroutes,
        .ctx = &api,
        .max_body = 256 * 1024,
        .http_threads = 8,
        .before_serve = before_serve,
    };
    rl_service_t *svc = NULL;
    rl_status_t st = rl_service_start(&spec, argc, argv, &svc);
    if (st == RL_ERR_NOT_FOUND)
        return 0; /* --help-config */
    if (st != RL_OK)
        return 1;
    rl_service_run(svc);
    rl_service_quiesce(svc); /* no request in flight from here */
    api_auth_shutdown();     /* lets queued login mails go out; counts into the metrics */
    rl_pg_pool_destroy(api.db);
    rl_service_stop(svc);
    return 0;
}

/* Prints the route table as JSON lines {"method","path"}: the tests check it
 * against openapi.json and generate their RBAC and isolation cases from it. */
static int cmd_routes(void)
{
    size_t n = 0;
    const rl_http_route_t *routes = api_routes(&n);
    for (size_t i = 0; i < n; i++)
        printf("{\"method\":\"%s\",\"path\":\"%s\"}\n", routes[i].method, routes[i].pattern);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "routes") == 0)
        return cmd_routes();
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate();
    if (strcmp(cmd, "create-tenant") == 0)
        return cmd_create_tenant(argc - 1, argv + 1);
    if (strcmp(cmd, "seed-demo") == 0)
        return cmd_seed_demo(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (cmd[0] == '-')
        return cmd_serve(argc, argv);
    fprintf(stderr, "renlayer-api: unknown command '%s' (serve, migrate, create-tenant, seed-demo, routes)\n",
            cmd);
    return 2;
}

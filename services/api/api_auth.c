/* Authentication of API calls (operator tokens, session JWTs in a header or
 * the console's cookie) and the e-mail code login. See api_auth.h and
 * docs/auth.md. */
#include "api_auth.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api_call.h"
#include "api_jwt.h"
#include "api_mail.h"
#include "api_validate.h"
#include "rl_apikey.h"
#include "rl_crypto.h"
#include "rl_log.h"

#define POOL_WAIT_MS 2000
#define COOKIE_NAME "renlayer_session"
#define CSRF_HEADER "X-RenLayer-CSRF"

/* Login codes: 6 digits, 10 minutes, 5 guesses; only the latest code of an
 * address counts. */
#define OTP_DIGITS 6
#define OTP_TTL_S 600
#define OTP_MAX_ATTEMPTS 5
/* An operator token's last_used_at is written at most this often. */
#define TOKEN_TOUCH_S 60
/* One code request in this many also deletes long-dead login rows. */
#define CLEANUP_ONE_IN 64

/* Code requests allowed per window, counted in renlayer.otp_requests (every
 * request, known address or not, so a 429 reveals nothing). */
typedef struct {
    bool per_client; /* false: per e-mail address */
    int window_s;
    int max;
} otp_limit_t;

static const otp_limit_t otp_limits[] = {
    {false, 900, 5},    /* an address: 5 codes per 15 minutes */
    {false, 86400, 20}, /* an address: 20 codes per day (bounds guessing to 100 a day) */
    {true, 900, 20},    /* a client address: 20 requests per 15 minutes */
};
#define NUM_OTP_LIMITS (sizeof otp_limits / sizeof otp_limits[0])

/* ---- small helpers -------------------------------------------------------------------- */

api_role_t api_role_parse(const char *s)
{
    if (s == NULL)
        return API_ROLE_NONE;
    if (strcmp(s, "owner") == 0)
        return API_ROLE_OWNER;
    if (strcmp(s, "admin") == 0)
        return API_ROLE_ADMIN;
    if (strcmp(s, "viewer") == 0)
        return API_ROLE_VIEWER;
    return API_ROLE_NONE;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* "\x<hex>": a bytea parameter in text form; out holds 2 * n + 3 bytes. */
static void bytea_param(const uint8_t *b, size_t n, char *out)
{
    out[0] = '\\';
    out[1] = 'x';
    rl_hex_encode(b, n, out + 2, 2 * n + 1);
}

/* Lower-cases the ASCII letters of an address (the SQL side uses lower()). */
static void lower_ascii(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

/* HMAC(hash_key, label NUL email [NUL code]): keyed, so a copy of the
 * database alone cannot test the million possible codes. */
static void keyed_hash(const api_t *api, const char *label, const char *email, const char *code,
                       uint8_t out[RL_SHA256_LEN])
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s%c%s%c%s", label, 0, email, 0, code ? code : "");
    rl_hmac_sha256(api->hash_key, sizeof api->hash_key, buf, (size_t)n, out);
}

static void utc_iso8601(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void respond_unauthenticated(rl_http_request_t *req, const char *message)
{
    rl_http_set_header(req, "WWW-Authenticate", "Bearer realm=\"renlayer\"");
    rl_http_respond_error(req, 401, "unauthenticated", message, NULL);
}

static bool acquire(api_t *api, rl_http_request_t *req, rl_pg_t **pg)
{
    if (rl_pg_pool_acquire(api->db, POOL_WAIT_MS, pg) != RL_OK) {
        rl_http_set_header(req, "Retry-After", "1");
        rl_http_respond_error(req, 503, "unavailable", "the database is busy, try again", NULL);
        return false;
    }
    return true;
}

/* The Set-Cookie value carrying jwt for max_age seconds ("" and 0 clear it). */
static void set_session_cookie(const api_t *api, rl_http_request_t *req, const char *jwt,
                               long max_age)
{
    char cookie[API_JWT_SIZE + 128];
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%ld%s",
             COOKIE_NAME, jwt, max_age, api->dev_mode ? "" : "; Secure");
    rl_http_set_header(req, "Set-Cookie", cookie);
}

/* ---- authentication ------------------------------------------------------------------- */

typedef enum {
    CRED_NONE,
    CRED_MALFORMED, /* an Authorization header that is not "Bearer <value>" */
    CRED_TOKEN,     /* Bearer rlop_... */
    CRED_BEARER_JWT,
    CRED_COOKIE_JWT,
} cred_kind_t;

typedef struct {
    cred_kind_t kind;
    char value[API_JWT_MAX_LEN + 2]; /* one byte more than accepted: detects oversize */
} credential_t;

/* Copies [s, s + n) into cred->value, truncating to one byte over the bound. */
static void cred_set(credential_t *cred, cred_kind_t kind, const char *s, size_t n)
{
    if (n > sizeof cred->value - 1)
        n = sizeof cred->value - 1;
    memcpy(cred->value, s, n);
    cred->value[n] = '\0';
    cred->kind = kind;
}

/* Finds the request's credential in the order api_auth.h gives. */
static void find_credential(rl_http_request_t *req, credential_t *cred)
{
    cred->kind = CRED_NONE;
    cred->value[0] = '\0';
    const char *auth = rl_http_header(req, "Authorization");
    if (auth) {
        while (*auth == ' ')
            auth++;
        if (strncasecmp(auth, "Bearer ", 7) != 0) {
            cred->kind = CRED_MALFORMED;
            return;
        }
        const char *v = auth + 7;
        while (*v == ' ')
            v++;
        size_t n = strlen(v);
        while (n > 0 && v[n - 1] == ' ')
            n--;
        if (n == 0) {
            cred->kind = CRED_MALFORMED;
            return;
        }
        bool token = n >= strlen(RL_APIKEY_OPERATOR_PREFIX) &&
                     strncmp(v, RL_APIKEY_OPERATOR_PREFIX, strlen(RL_APIKEY_OPERATOR_PREFIX)) == 0;
        cred_set(cred, token ? CRED_TOKEN : CRED_BEARER_JWT, v, n);
        return;
    }
    const char *cookies = rl_http_header(req, "Cookie");
    static const char name[] = COOKIE_NAME "=";
    for (const char *p = cookies; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n >= sizeof name - 1 && strncmp(p, name, sizeof name - 1) == 0) {
            size_t vn = n - (sizeof name - 1);
            while (vn > 0 && p[sizeof name - 1 + vn - 1] == ' ')
                vn--;
            if (vn > 0) {
                cred_set(cred, CRED_COOKIE_JWT, p + sizeof name - 1, vn);
                return;
            }
        }
        p += n;
    }
}

static bool unsafe_method(const char *m)
{
    return !(strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0);
}

static bool token_lookup(api_t *api, rl_pg_t *pg, rl_http_request_t *req, const char *secret,
                         api_actor_t *actor)
{
    if (!rl_apikey_well_formed(RL_APIKEY_OPERATOR, secret)) {
        respond_unauthenticated(req, "malformed operator token");
        return false;
    }
    uint8_t hash[RL_APIKEY_HASH_LEN];
    char hash_hex[2 * RL_APIKEY_HASH_LEN + 3], touch[16];
    rl_apikey_hash(api->hash_key, secret, hash);
    bytea_param(hash, sizeof hash, hash_hex);
    snprintf(touch, sizeof touch, "%d", TOKEN_TOUCH_S);
    const char *p[] = {hash_hex, touch};
    PGresult *r = NULL;
    /* One round trip: find the token and, at most once a minute, stamp its use. */
    rl_status_t st = rl_pg_query(
        pg,
        "WITH hit AS ("
        "  SELECT k.id, k.tenant_id, k.operator_id, o.email, o.role,"
        "         (k.last_used_at IS NULL OR"
        "          k.last_used_at < now() - make_interval(secs => $2::int)) AS stale"
        "  FROM renlayer.operator_tokens k"
        "  JOIN renlayer.operators o ON o.tenant_id = k.tenant_id AND o.id = k.operator_id"
        "  WHERE k.token_hash = $1::bytea AND k.revoked_at IS NULL"
        "    AND (k.expires_at IS NULL OR k.expires_at > now()) AND o.disabled_at IS NULL"
        "), touch AS ("
        "  UPDATE renlayer.operator_tokens k SET last_used_at = now()"
        "  FROM hit WHERE k.id = hit.id AND hit.stale"
        ") SELECT id, tenant_id, operator_id, email, role FROM hit",
        2, p, &r);
    if (st != RL_OK) {
        api_respond_status(req, st, NULL);
        return false;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        respond_unauthenticated(req, "unknown, revoked or expired operator token");
        return false;
    }
    copy_str(actor->token_id, sizeof actor->token_id, PQgetvalue(r, 0, 0));
    copy_str(actor->tenant_id, sizeof actor->tenant_id, PQgetvalue(r, 0, 1));
    copy_str(actor->operator_id, sizeof actor->operator_id, PQgetvalue(r, 0, 2));
    copy_str(actor->operator_email, sizeof actor->operator_email, PQgetvalue(r, 0, 3));
    copy_str(actor->role, sizeof actor->role, PQgetvalue(r, 0, 4));
    PQclear(r);
    return true;
}

/* Verifies a session JWT and that its session is alive; jti receives its id. */
static bool session_lookup(api_t *api, rl_pg_t *pg, rl_http_request_t *req, const char *jwt,
                           api_actor_t *actor, char jti[40])
{
    api_jwt_claims_t c;
    rl_status_t st = api_jwt_verify(api->jwt_key, jwt, (int64_t)time(NULL), &c);
    if (st != RL_OK) {
        respond_unauthenticated(req, st == RL_ERR_TIMEOUT ? "the session has expired"
                                                          : "invalid session token");
        return false;
    }
    const char *p[] = {c.jti, c.tid, c.sub};
    PGresult *r = NULL;
    /* The role comes from the operator row, not the token: changes apply at once. */
    st = rl_pg_query(
        pg,
        "SELECT o.email, o.role FROM renlayer.operator_sessions s"
        " JOIN renlayer.operators o ON o.tenant_id = s.tenant_id AND o.id = s.operator_id"
        " WHERE s.id = $1 AND s.tenant_id = $2 AND s.operator_id = $3"
        "   AND s.revoked_at IS NULL AND s.expires_at > now()"
        "   AND o.disabled_at IS NULL",
        3, p, &r);
    if (st != RL_OK) {
        api_respond_status(req, st, NULL);
        return false;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        respond_unauthenticated(req, "the session has ended");
        return false;
    }
    copy_str(actor->tenant_id, sizeof actor->tenant_id, c.tid);
    copy_str(actor->operator_id, sizeof actor->operator_id, c.sub);
    copy_str(actor->operator_email, sizeof actor->operator_email, PQgetvalue(r, 0, 0));
    copy_str(actor->role, sizeof actor->role, PQgetvalue(r, 0, 1));
    PQclear(r);
    copy_str(jti, 40, c.jti);
    return true;
}

/* api_authenticate, also returning the session id ("" for a token). */
static bool authenticate(api_t *api, rl_pg_t *pg, rl_http_request_t *req, api_actor_t *actor,
                         char jti[40])
{
    memset(actor, 0, sizeof *actor);
    actor->client_addr = rl_http_client_addr(req);
    actor->request_id = rl_http_request_id(req);
    jti[0] = '\0';
    credential_t cred;
    find_credential(req, &cred);
    switch (cred.kind) {
    case CRED_NONE:
        respond_unauthenticated(req, "sign in, or send Authorization: Bearer <token>");
        return false;
    case CRED_MALFORMED:
        respond_unauthenticated(req, "the Authorization header must be 'Bearer <token>'");
        return false;
    case CRED_TOKEN:
        return token_lookup(api, pg, req, cred.value, actor);
    case CRED_BEARER_JWT:
        return session_lookup(api, pg, req, cred.value, actor, jti);
    case CRED_COOKIE_JWT:
        if (!session_lookup(api, pg, req, cred.value, actor, jti))
            return false;
        /* A browser sends cookies cross-site; it cannot send this header without
         * a CORS preflight, which the API never grants. */
        if (unsafe_method(rl_http_method(req))) {
            const char *csrf = rl_http_header(req, CSRF_HEADER);
            if (csrf == NULL || strcmp(csrf, "1") != 0) {
                rl_http_respond_error(req, 403, "csrf_required",
                                      "cookie-authenticated changes need the header "
                                      "X-RenLayer-CSRF: 1",
                                      NULL);
                return false;
            }
        }
        return true;
    }
    return false;
}

bool api_authenticate(api_t *api, rl_pg_t *pg, rl_http_request_t *req, api_actor_t *actor)
{
    char jti[40];
    return authenticate(api, pg, req, actor, jti);
}

/* ---- login mail ----------------------------------------------------------------------- */

static pthread_mutex_t mailer_mu = PTHREAD_MUTEX_INITIALIZER;
static api_mailer_t *mailer;

/* The process's mail sender, started on first use; NULL if it cannot start. */
static api_mailer_t *get_mailer(const api_t *api)
{
    pthread_mutex_lock(&mailer_mu);
    if (mailer == NULL) {
        api_mail_server_t srv = {
            .url = api->smtp_url,
            .from = api->smtp_from ? api->smtp_from : "RenLayer <no-reply@renlayer.local>",
            .user = api->smtp_user,
            .password = api->smtp_password,
        };
        rl_metrics_t *metrics = api->svc ? rl_service_metrics(api->svc) : NULL;
        if (api_mailer_create(&srv, 0, metrics, &mailer) != RL_OK)
            rl_log(RL_LOG_ERROR, "mail sender did not start", "{s:s}", "detail", rl_error_last());
    }
    api_mailer_t *m = mailer;
    pthread_mutex_unlock(&mailer_mu);
    return m;
}

void api_auth_shutdown(void)
{
    pthread_mutex_lock(&mailer_mu);
    api_mailer_t *m = mailer;
    mailer = NULL;
    pthread_mutex_unlock(&mailer_mu);
    api_mailer_destroy(m, 5000);
}

/* Hands a fresh code to the operator: SMTP, the log (dev mode), or a warning. */
static void deliver_code(const api_t *api, const char *email, const char *code)
{
    if (api->smtp_url && api->smtp_url[0]) {
        char body[512];
        snprintf(body, sizeof body,
                 "Your RenLayer login code is:\n\n    %s\n\n"
                 "It expires in %d minutes and works once.\n"
                 "If you did not ask to sign in, you can ignore this mail.\n",
                 code, OTP_TTL_S / 60);
        api_mailer_t *m = get_mailer(api);
        rl_status_t st =
            m ? api_mailer_enqueue(m, email, "Your RenLayer login code", body) : RL_ERR_UNAVAILABLE;
        memset(body, 0, sizeof body);
        if (st != RL_OK)
            rl_log(RL_LOG_ERROR, "login code mail not queued", "{s:s,s:s}", "email", email,
                   "detail", rl_error_last());
    }
    if (api->dev_mode)
        rl_log(RL_LOG_INFO, "login code", "{s:s,s:s}", "email", email, "code", code);
    else if (api->smtp_url == NULL || api->smtp_url[0] == '\0')
        rl_log(RL_LOG_WARN, "login code not sent: mail is not configured (RENLAYER_SMTP_URL)",
               "{s:s}", "email", email);
}

/* Six uniformly random digits. */
static rl_status_t random_code(char out[OTP_DIGITS + 1])
{
    uint32_t v;
    do {
        if (rl_random_bytes(&v, sizeof v) != RL_OK)
            return rl_error(RL_ERR_CRYPTO, "random code");
    } while (v >= 4294000000u); /* the largest multiple of 10^6 below 2^32: no bias */
    snprintf(out, OTP_DIGITS + 1, "%06u", (unsigned)(v % 1000000u));
    return RL_OK;
}

/* Deletes login rows nobody can use any more (now and then, on a code request). */
static void cleanup_login_rows(rl_pg_t *pg)
{
    static const char *const sql[] = {
        "DELETE FROM renlayer.otp_codes WHERE expires_at < now() - interval '1 day'",
        "DELETE FROM renlayer.otp_requests WHERE created_at < now() - interval '2 days'",
        "DELETE FROM renlayer.operator_sessions WHERE expires_at < now() - interval '30 days'",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        PGresult *r = NULL;
        if (rl_pg_query(pg, sql[i], 0, NULL, &r) == RL_OK)
            PQclear(r);
        else
            rl_log(RL_LOG_DEBUG, "login cleanup failed", "{s:s}", "detail", rl_error_last());
    }
}

/* ---- POST /v1/auth/otp/request -------------------------------------------------------- */

/* Seconds until every limit of otp_limits has room for one more request of
 * email_hash / client; 0 when there is room now. */
static rl_status_t otp_retry_after(rl_pg_t *pg, const char *email_hash, const char *client,
                                   long *retry_after)
{
    *retry_after = 0;
    for (size_t i = 0; i < NUM_OTP_LIMITS; i++) {
        const otp_limit_t *l = &otp_limits[i];
        if (l->per_client && (client == NULL || client[0] == '\0'))
            continue;
        char window[16], offset[16];
        snprintf(window, sizeof window, "%d", l->window_s);
        snprintf(offset, sizeof offset, "%d", l->max - 1);
        const char *p[] = {l->per_client ? client : email_hash, window, offset};
        /* The max-th newest request in the window, if any, is the one that must
         * age out of it before another is allowed. */
        const char *sql =
            l->per_client
                ? "SELECT ceil(extract(epoch FROM created_at + make_interval(secs => $2::int)"
                  " - clock_timestamp()))::bigint FROM renlayer.otp_requests"
                  " WHERE client_addr = $1::inet"
                  "   AND created_at > now() - make_interval(secs => $2::int)"
                  " ORDER BY created_at DESC OFFSET $3::int LIMIT 1"
                : "SELECT ceil(extract(epoch FROM created_at + make_interval(secs => $2::int)"
                  " - clock_timestamp()))::bigint FROM renlayer.otp_requests"
                  " WHERE email_hash = $1::bytea"
                  "   AND created_at > now() - make_interval(secs => $2::int)"
                  " ORDER BY created_at DESC OFFSET $3::int LIMIT 1";
        PGresult *r = NULL;
        rl_status_t st = rl_pg_query(pg, sql, 3, p, &r);
        if (st != RL_OK)
            return st;
        if (PQntuples(r) == 1) {
            long s = strtol(PQgetvalue(r, 0, 0), NULL, 10);
            if (s < 1)
                s = 1;
            if (s > *retry_after)
                *retry_after = s;
        }
        PQclear(r);
    }
    return RL_OK;
}

/* In one transaction: checks the limits (*retry_after > 0 when one is hit,
 * then nothing is written), records the request and stores the code's hash
 * when email belongs to a live operator (*issued). */
static rl_status_t issue_code(rl_pg_t *pg, const char *email, const char *email_hash_hex,
                              const char *code_hash_hex, const char *client, long *retry_after,
                              bool *issued)
{
    *retry_after = 0;
    *issued = false;
    rl_status_t st = rl_pg_begin(pg);
    if (st == RL_OK) {
        /* Serialise requests of one address, then of one client, so concurrent
         * requests cannot all pass the count (always in this order: no deadlock). */
        const char *p[] = {email_hash_hex, client};
        PGresult *r = NULL;
        st = rl_pg_query(pg,
                         "SELECT pg_advisory_xact_lock(hashtextextended($1, 7)),"
                         " pg_advisory_xact_lock(hashtextextended(coalesce($2, ''), 8))",
                         2, p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = otp_retry_after(pg, email_hash_hex, client, retry_after);
    if (st == RL_OK && *retry_after == 0) {
        char id[40];
        api_new_id(id);
        const char *p[] = {id, email_hash_hex, client};
        PGresult *r = NULL;
        st = rl_pg_query(pg,
                         "INSERT INTO renlayer.otp_requests (id, email_hash, client_addr)"
                         " VALUES ($1, $2::bytea, $3::inet)",
                         3, p, &r);
        PQclear(r);
    }
    if (st == RL_OK && *retry_after == 0) {
        /* One statement whether or not the address is an operator's: the time
         * taken does not tell them apart. */
        char id[40], ttl[16];
        api_new_id(id);
        snprintf(ttl, sizeof ttl, "%d", OTP_TTL_S);
        const char *p[] = {id, email, code_hash_hex, ttl, client};
        PGresult *r = NULL;
        st = rl_pg_query(
            pg,
            "INSERT INTO renlayer.otp_codes (id, email, code_hash, expires_at, client_addr)"
            " SELECT $1, lower($2), $3::bytea, now() + make_interval(secs => $4::int), $5::inet"
            " WHERE EXISTS (SELECT 1 FROM renlayer.operators"
            "               WHERE lower(email) = lower($2) AND disabled_at IS NULL)",
            5, p, &r);
        if (st == RL_OK)
            *issued = rl_pg_rows_affected(r) == 1;
        PQclear(r);
    }
    if (st == RL_OK && *retry_after == 0)
        st = rl_pg_commit(pg);
    else
        rl_pg_rollback(pg);
    return st;
}

void api_auth_otp_request(rl_http_request_t *req, void *ctx)
{
    api_t *api = ctx;
    json_t *in = rl_http_json_body(req);
    if (in == NULL)
        return;
    json_t *errors = json_object();
    const char *given = NULL;
    if (api_field_str(in, "email", true, 320, errors, &given) && !api_valid_email(given))
        api_field_error(errors, "email", "must be an e-mail address");
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "some fields are invalid", errors);
        return;
    }
    json_decref(errors);
    char email[328], code[OTP_DIGITS + 1];
    lower_ascii(given, email, sizeof email);
    if (random_code(code) != RL_OK) {
        api_respond_status(req, RL_ERR_CRYPTO, NULL);
        return;
    }
    uint8_t email_hash[RL_SHA256_LEN], code_hash[RL_SHA256_LEN];
    char email_hash_hex[2 * RL_SHA256_LEN + 3], code_hash_hex[2 * RL_SHA256_LEN + 3];
    keyed_hash(api, "renlayer/otp-request/v1", email, NULL, email_hash);
    keyed_hash(api, "renlayer/otp/v1", email, code, code_hash);
    bytea_param(email_hash, sizeof email_hash, email_hash_hex);
    bytea_param(code_hash, sizeof code_hash, code_hash_hex);
    const char *client = rl_http_client_addr(req);
    if (client && client[0] == '\0')
        client = NULL;

    rl_pg_t *pg = NULL;
    if (!acquire(api, req, &pg))
        return;
    long retry_after = 0;
    bool issued = false;
    rl_status_t st =
        issue_code(pg, email, email_hash_hex, code_hash_hex, client, &retry_after, &issued);
    uint32_t dice = 0;
    if (st == RL_OK && rl_random_bytes(&dice, sizeof dice) == RL_OK && dice % CLEANUP_ONE_IN == 0)
        cleanup_login_rows(pg);
    rl_pg_pool_release(api->db, pg);

    if (st != RL_OK) {
        memset(code, 0, sizeof code);
        api_respond_status(req, st, NULL);
        return;
    }
    if (retry_after > 0) {
        char value[24], msg[96];
        snprintf(value, sizeof value, "%ld", retry_after);
        snprintf(msg, sizeof msg, "too many login code requests; try again in %ld seconds",
                 retry_after);
        rl_http_set_header(req, "Retry-After", value);
        rl_http_respond_error(req, 429, "rate_limited", msg, NULL);
        return;
    }
    if (issued)
        deliver_code(api, email, code);
    memset(code, 0, sizeof code);
    rl_http_respond_json(req, 202, json_pack("{s:s}", "status", "sent"));
}

/* ---- POST /v1/auth/otp/verify --------------------------------------------------------- */

static bool valid_code(const char *s)
{
    if (s == NULL || strlen(s) != OTP_DIGITS)
        return false;
    for (int i = 0; i < OTP_DIGITS; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/* How a verify attempt ended, before the session is made. */
typedef enum { CODE_OK, CODE_INVALID, CODE_WRONG_TENANT, CODE_ERROR } code_outcome_t;

typedef struct {
    char id[40], tenant_id[40], email[328], name[208], role[8];
} login_operator_t;

/* Checks the code inside the open transaction (the row stays locked until it
 * ends, so two verifies of one code are serialised and only one succeeds),
 * counts a wrong guess, and picks the operator. */
static code_outcome_t check_code(api_t *api, rl_pg_t *pg, const char *email, const char *code,
                                 const char *tenant_id, char code_id[40], login_operator_t *op,
                                 rl_status_t *st)
{
    const char *p[] = {email};
    PGresult *r = NULL;
    *st = rl_pg_query(pg,
                      "SELECT id, code_hash, attempts, used_at IS NOT NULL,"
                      " expires_at <= now() FROM renlayer.otp_codes"
                      " WHERE lower(email) = lower($1)"
                      " ORDER BY created_at DESC, id DESC LIMIT 1 FOR UPDATE",
                      1, p, &r);
    if (*st != RL_OK)
        return CODE_ERROR;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return CODE_INVALID;
    }
    copy_str(code_id, 40, PQgetvalue(r, 0, 0));
    uint8_t stored[64];
    size_t stored_len = 0;
    const char *hex = PQgetvalue(r, 0, 1);
    bool decoded =
        strncmp(hex, "\\x", 2) == 0 &&
        rl_hex_decode(hex + 2, strlen(hex + 2), stored, sizeof stored, &stored_len) == RL_OK;
    long attempts = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    bool used = PQgetvalue(r, 0, 3)[0] == 't', expired = PQgetvalue(r, 0, 4)[0] == 't';
    PQclear(r);
    if (!decoded || used || expired || attempts >= OTP_MAX_ATTEMPTS)
        return CODE_INVALID;

    uint8_t given[RL_SHA256_LEN];
    keyed_hash(api, "renlayer/otp/v1", email, code, given);
    if (stored_len != sizeof given || !rl_ct_equal(stored, given, sizeof given)) {
        const char *pa[] = {code_id};
        *st = rl_pg_query(pg, "UPDATE renlayer.otp_codes SET attempts = attempts + 1 WHERE id = $1",
                          1, pa, &r);
        if (*st != RL_OK)
            return CODE_ERROR;
        PQclear(r);
        return CODE_INVALID;
    }

    /* Several tenants: the one asked for, else the oldest membership. */
    const char *po[] = {email, tenant_id};
    *st = rl_pg_query(pg,
                      "SELECT id, tenant_id, email, name, role FROM renlayer.operators"
                      " WHERE lower(email) = lower($1) AND disabled_at IS NULL"
                      "   AND ($2::uuid IS NULL OR tenant_id = $2::uuid)"
                      " ORDER BY created_at, id LIMIT 1",
                      2, po, &r);
    if (*st != RL_OK)
        return CODE_ERROR;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return tenant_id ? CODE_WRONG_TENANT : CODE_INVALID;
    }
    copy_str(op->id, sizeof op->id, PQgetvalue(r, 0, 0));
    copy_str(op->tenant_id, sizeof op->tenant_id, PQgetvalue(r, 0, 1));
    copy_str(op->email, sizeof op->email, PQgetvalue(r, 0, 2));
    copy_str(op->name, sizeof op->name, PQgetvalue(r, 0, 3));
    copy_str(op->role, sizeof op->role, PQgetvalue(r, 0, 4));
    PQclear(r);
    return CODE_OK;
}

/* Uses the code, stamps the login and creates the session with its audit row. */
static rl_status_t open_session(rl_pg_t *pg, rl_http_request_t *req, const char *code_id,
                                const login_operator_t *op, const char *jti, time_t expires)
{
    char exp_text[24];
    snprintf(exp_text, sizeof exp_text, "%lld", (long long)expires);
    const char *client = rl_http_client_addr(req);
    if (client && client[0] == '\0')
        client = NULL;
    PGresult *r = NULL;
    const char *pc[] = {code_id};
    rl_status_t st =
        rl_pg_query(pg, "UPDATE renlayer.otp_codes SET used_at = now() WHERE id = $1", 1, pc, &r);
    PQclear(r);
    if (st == RL_OK) {
        const char *p[] = {op->tenant_id, op->id};
        r = NULL;
        st = rl_pg_query(pg,
                         "UPDATE renlayer.operators SET last_login_at = now()"
                         " WHERE tenant_id = $1 AND id = $2",
                         2, p, &r);
        PQclear(r);
    }
    if (st == RL_OK) {
        const char *p[] = {jti, op->tenant_id, op->id, exp_text, client};
        r = NULL;
        st = rl_pg_query(pg,
                         "INSERT INTO renlayer.operator_sessions"
                         " (id, tenant_id, operator_id, expires_at, client_addr)"
                         " VALUES ($1, $2, $3, to_timestamp($4::bigint), $5::inet)",
                         5, p, &r);
        PQclear(r);
    }
    if (st == RL_OK) {
        api_actor_t actor = {.client_addr = client, .request_id = rl_http_request_id(req)};
        copy_str(actor.tenant_id, sizeof actor.tenant_id, op->tenant_id);
        copy_str(actor.operator_id, sizeof actor.operator_id, op->id);
        copy_str(actor.operator_email, sizeof actor.operator_email, op->email);
        copy_str(actor.role, sizeof actor.role, op->role);
        char exp_iso[32];
        utc_iso8601(expires, exp_iso);
        json_t *after = json_pack("{s:s,s:s,s:s}", "operator_id", op->id, "method", "email_code",
                                  "expires_at", exp_iso);
        st = api_audit(pg, &actor, "auth.login", "operator_session", jti, NULL, after);
        json_decref(after);
    }
    return st;
}

void api_auth_otp_verify(rl_http_request_t *req, void *ctx)
{
    api_t *api = ctx;
    json_t *in = rl_http_json_body(req);
    if (in == NULL)
        return;
    json_t *errors = json_object();
    const char *given = NULL, *code = NULL, *tenant_id = NULL;
    if (api_field_str(in, "email", true, 320, errors, &given) && !api_valid_email(given))
        api_field_error(errors, "email", "must be an e-mail address");
    if (api_field_str(in, "code", true, 16, errors, &code) && !valid_code(code))
        api_field_error(errors, "code", "must be the 6-digit code from the mail");
    api_field_uuid(in, "tenant_id", false, errors, &tenant_id);
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "some fields are invalid", errors);
        return;
    }
    json_decref(errors);
    char email[328];
    lower_ascii(given, email, sizeof email);

    rl_pg_t *pg = NULL;
    if (!acquire(api, req, &pg))
        return;
    char code_id[40] = "", jti[40], jwt[API_JWT_SIZE];
    login_operator_t op;
    memset(&op, 0, sizeof op);
    api_new_id(jti);
    time_t now = time(NULL), expires = now + api->session_ttl_s;
    code_outcome_t outcome = CODE_ERROR;
    rl_status_t st = rl_pg_begin(pg);
    if (st == RL_OK)
        outcome = check_code(api, pg, email, code, tenant_id, code_id, &op, &st);
    if (outcome == CODE_OK)
        st = open_session(pg, req, code_id, &op, jti, expires);
    if (outcome == CODE_OK && st == RL_OK) {
        api_jwt_claims_t c = {.iat = now, .exp = expires};
        copy_str(c.sub, sizeof c.sub, op.id);
        copy_str(c.tid, sizeof c.tid, op.tenant_id);
        copy_str(c.role, sizeof c.role, op.role);
        copy_str(c.jti, sizeof c.jti, jti);
        st = api_jwt_sign(api->jwt_key, &c, jwt, sizeof jwt);
    }
    /* A wrong guess is committed too: its attempt must count. */
    if (st == RL_OK && (outcome == CODE_OK || outcome == CODE_INVALID))
        st = rl_pg_commit(pg);
    else
        rl_pg_rollback(pg);
    rl_pg_pool_release(api->db, pg);

    if (st != RL_OK) {
        api_respond_status(req, st, NULL);
        return;
    }
    if (outcome == CODE_WRONG_TENANT) {
        rl_http_respond_error(req, 403, "forbidden", "not an operator of that tenant", NULL);
        return;
    }
    if (outcome != CODE_OK) {
        rl_http_respond_error(req, 401, "invalid_code",
                              "the code is wrong, used or expired; request a new one", NULL);
        return;
    }
    set_session_cookie(api, req, jwt, api->session_ttl_s);
    char exp_iso[32];
    utc_iso8601(expires, exp_iso);
    rl_log(RL_LOG_INFO, "operator signed in", "{s:s,s:s,s:s}", "tenant_id", op.tenant_id,
           "operator_id", op.id, "request_id", rl_http_request_id(req));
    rl_http_respond_json(req, 200,
                         json_pack("{s:{s:s,s:s,s:s,s:s,s:s},s:s}", "operator", "id", op.id,
                                   "email", op.email, "name", op.name, "role", op.role, "tenant_id",
                                   op.tenant_id, "expires_at", exp_iso));
}

/* ---- POST /v1/auth/logout, GET /v1/me ------------------------------------------------- */

void api_auth_logout(rl_http_request_t *req, void *ctx)
{
    api_t *api = ctx;
    rl_pg_t *pg = NULL;
    if (!acquire(api, req, &pg))
        return;
    api_actor_t actor;
    char jti[40];
    if (!authenticate(api, pg, req, &actor, jti)) {
        rl_pg_pool_release(api->db, pg);
        return;
    }
    if (jti[0] == '\0') {
        rl_pg_pool_release(api->db, pg);
        rl_http_respond_error(req, 400, "no_session",
                              "an operator token has no session to log out; revoke the token "
                              "instead",
                              NULL);
        return;
    }
    rl_status_t st = rl_pg_begin(pg);
    if (st == RL_OK) {
        const char *p[] = {actor.tenant_id, jti};
        PGresult *r = NULL;
        st = rl_pg_query(pg,
                         "UPDATE renlayer.operator_sessions SET revoked_at = now()"
                         " WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                         2, p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = api_audit(pg, &actor, "auth.logout", "operator_session", jti, NULL, NULL);
    if (st == RL_OK)
        st = rl_pg_commit(pg);
    else
        rl_pg_rollback(pg);
    rl_pg_pool_release(api->db, pg);
    if (st != RL_OK) {
        api_respond_status(req, st, NULL);
        return;
    }
    set_session_cookie(api, req, "", 0);
    rl_http_respond_json(req, 204, NULL);
}

void api_auth_me(rl_http_request_t *req, void *ctx)
{
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, call.actor.operator_id,
                       call.actor.token_id[0] ? "token" : "session"};
    api_respond_one(req, call.pg, 200,
                    "SELECT json_build_object("
                    " 'operator', json_build_object('id', o.id, 'email', o.email, 'name', o.name,"
                    "   'role', o.role, 'tenant_id', o.tenant_id),"
                    " 'tenant', json_build_object('id', t.id, 'name', t.name),"
                    " 'auth', $3::text)"
                    " FROM renlayer.operators o JOIN renlayer.tenants t ON t.id = o.tenant_id"
                    " WHERE o.tenant_id = $1 AND o.id = $2",
                    3, p);
    api_call_end(&call);
}

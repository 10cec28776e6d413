/* HS256 session tokens: see api_jwt.h for what is accepted. */
#include "api_jwt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_crypto.h"
#include "rl_json.h"
#include "rl_uuid.h"

/* The one header we issue and accept. */
static const char HEADER_JSON[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static bool valid_uuid(const char *s)
{
    rl_uuid_t u;
    return s != NULL && rl_uuid_parse(s, &u) == RL_OK;
}

static bool valid_role(const char *s)
{
    return s != NULL &&
           (strcmp(s, "owner") == 0 || strcmp(s, "admin") == 0 || strcmp(s, "viewer") == 0);
}

/* Appends base64url(data) at out + *pos, then advances *pos. */
static rl_status_t append_b64(const void *data, size_t n, char *out, size_t cap, size_t *pos)
{
    if (*pos >= cap)
        return rl_error(RL_ERR_TOO_LARGE, "jwt: buffer too small");
    rl_status_t st = rl_base64url_encode(data, n, out + *pos, cap - *pos);
    if (st != RL_OK)
        return rl_error(RL_ERR_TOO_LARGE, "jwt: buffer too small");
    *pos += strlen(out + *pos);
    return RL_OK;
}

static rl_status_t append_char(char c, char *out, size_t cap, size_t *pos)
{
    if (*pos + 1 >= cap)
        return rl_error(RL_ERR_TOO_LARGE, "jwt: buffer too small");
    out[(*pos)++] = c;
    out[*pos] = '\0';
    return RL_OK;
}

rl_status_t api_jwt_sign(const uint8_t key[32], const api_jwt_claims_t *claims, char *out,
                         size_t cap)
{
    if (!valid_uuid(claims->sub) || !valid_uuid(claims->tid) || !valid_uuid(claims->jti) ||
        !valid_role(claims->role) || claims->exp <= claims->iat)
        return rl_error(RL_ERR_INVALID, "jwt: invalid claims");
    json_t *payload = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I}", "sub", claims->sub, "tid", claims->tid,
                                "role", claims->role, "jti", claims->jti, "iat",
                                (json_int_t)claims->iat, "exp", (json_int_t)claims->exp);
    char *text = payload ? json_dumps(payload, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(payload);
    if (text == NULL)
        return rl_error(RL_ERR_NOMEM, "jwt: claims encoding");

    size_t pos = 0;
    rl_status_t st = append_b64(HEADER_JSON, sizeof HEADER_JSON - 1, out, cap, &pos);
    if (st == RL_OK)
        st = append_char('.', out, cap, &pos);
    if (st == RL_OK)
        st = append_b64(text, strlen(text), out, cap, &pos);
    free(text);
    uint8_t mac[RL_SHA256_LEN];
    if (st == RL_OK)
        st = rl_hmac_sha256(key, 32, out, pos, mac);
    if (st == RL_OK)
        st = append_char('.', out, cap, &pos);
    if (st == RL_OK)
        st = append_b64(mac, sizeof mac, out, cap, &pos);
    if (st == RL_OK && pos > API_JWT_MAX_LEN)
        st = rl_error(RL_ERR_TOO_LARGE, "jwt: token longer than %d bytes", API_JWT_MAX_LEN);
    return st;
}

/* Decodes one base64url segment and parses it as a JSON object (owned *obj). */
static rl_status_t decode_object(const char *seg, size_t len, json_t **obj)
{
    char buf[API_JWT_MAX_LEN];
    size_t n = 0;
    if (len == 0 || rl_base64url_decode(seg, len, buf, sizeof buf, &n) != RL_OK)
        return rl_error(RL_ERR_INVALID, "jwt: segment is not base64url");
    if (rl_json_parse_object(buf, n, 0, obj) != RL_OK)
        return rl_error(RL_ERR_INVALID, "jwt: segment is not a JSON object");
    return RL_OK;
}

static bool header_ok(const json_t *h)
{
    const char *alg = json_string_value(json_object_get(h, "alg"));
    const char *typ = json_string_value(json_object_get(h, "typ"));
    return json_object_size(h) == 2 && alg && strcmp(alg, "HS256") == 0 && typ &&
           strcmp(typ, "JWT") == 0;
}

/* Copies string claim key into out (cap bytes) when valid() accepts it. */
static bool claim_str(const json_t *p, const char *key, bool (*valid)(const char *), char *out,
                      size_t cap)
{
    const char *v = json_string_value(json_object_get(p, key));
    if (v == NULL || !valid(v) || strlen(v) >= cap)
        return false;
    memcpy(out, v, strlen(v) + 1);
    return true;
}

static bool claim_int(const json_t *p, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(p, key);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

rl_status_t api_jwt_verify(const uint8_t key[32], const char *token, int64_t now,
                           api_jwt_claims_t *out)
{
    if (token == NULL)
        return rl_error(RL_ERR_INVALID, "jwt: no token");
    size_t len = strnlen(token, API_JWT_MAX_LEN + 1);
    if (len > API_JWT_MAX_LEN)
        return rl_error(RL_ERR_TOO_LARGE, "jwt: token longer than %d bytes", API_JWT_MAX_LEN);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return rl_error(RL_ERR_INVALID, "jwt: not three segments");

    /* The signature first: nothing an attacker wrote is parsed before it checks out. */
    uint8_t sig[RL_SHA256_LEN + 3], mac[RL_SHA256_LEN];
    size_t siglen = 0;
    const char *s = dot2 + 1;
    if (rl_base64url_decode(s, len - (size_t)(s - token), sig, sizeof sig, &siglen) != RL_OK ||
        siglen != RL_SHA256_LEN)
        return rl_error(RL_ERR_INVALID, "jwt: malformed signature");
    if (rl_hmac_sha256(key, 32, token, (size_t)(dot2 - token), mac) != RL_OK)
        return rl_error(RL_ERR_CRYPTO, "jwt: hmac failed");
    if (!rl_ct_equal(sig, mac, sizeof mac))
        return rl_error(RL_ERR_CRYPTO, "jwt: bad signature");

    json_t *header = NULL, *payload = NULL;
    rl_status_t st = decode_object(token, (size_t)(dot1 - token), &header);
    if (st == RL_OK && !header_ok(header))
        st = rl_error(RL_ERR_INVALID, "jwt: header is not HS256/JWT");
    if (st == RL_OK)
        st = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload);
    api_jwt_claims_t c;
    memset(&c, 0, sizeof c);
    int64_t nbf = 0;
    if (st == RL_OK && (!claim_str(payload, "sub", valid_uuid, c.sub, sizeof c.sub) ||
                        !claim_str(payload, "tid", valid_uuid, c.tid, sizeof c.tid) ||
                        !claim_str(payload, "jti", valid_uuid, c.jti, sizeof c.jti) ||
                        !claim_str(payload, "role", valid_role, c.role, sizeof c.role) ||
                        !claim_int(payload, "iat", &c.iat) || !claim_int(payload, "exp", &c.exp) ||
                        (json_object_get(payload, "nbf") && !claim_int(payload, "nbf", &nbf))))
        st = rl_error(RL_ERR_INVALID, "jwt: claims missing or malformed");
    if (st == RL_OK && c.exp <= now)
        st = rl_error(RL_ERR_TIMEOUT, "jwt: expired");
    if (st == RL_OK && json_object_get(payload, "nbf") && nbf > now + API_JWT_LEEWAY_S)
        st = rl_error(RL_ERR_TIMEOUT, "jwt: not yet valid");
    json_decref(header);
    json_decref(payload);
    if (st == RL_OK)
        *out = c;
    return st;
}

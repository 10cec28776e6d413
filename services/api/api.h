/* api: renlayer-api's shared context, the acting operator, and the small
 * database helpers every resource module uses. */
#ifndef API_H
#define API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "rl_pg.h"
#include "rl_service.h"

typedef struct {
    rl_service_t *svc;        /* borrowed; NULL in CLI commands */
    rl_pg_pool_t *db;         /* owned by main */
    uint8_t secret_key[32];   /* RENLAYER_SECRET_KEY: seals gate header values */
    uint8_t hash_key[32];     /* derived: keyed hashes of keys, tokens, codes */
    uint8_t jwt_key[32];      /* RENLAYER_JWT_SECRET */
    bool dev_mode;            /* RENLAYER_DEV_MODE: OTP codes in the log, no Secure cookie */
    bool signup_open;         /* RENLAYER_SIGNUP=open: POST /v1/tenants is allowed */
    const char *smtp_url;     /* RENLAYER_SMTP_URL, "smtp://host:587" or smtps://; NULL: no mail */
    const char *smtp_from;    /* RENLAYER_SMTP_FROM */
    const char *smtp_user;    /* RENLAYER_SMTP_USER */
    const char *smtp_password; /* RENLAYER_SMTP_PASSWORD */
    long session_ttl_s;       /* RENLAYER_SESSION_TTL_S: login session lifetime */
} api_t;

/* Who does a mutation, for authorization and the audit log. */
typedef struct {
    char tenant_id[40];      /* "" before a tenant exists (create-tenant) */
    char operator_id[40];    /* "" for the command line (the system) */
    char operator_email[328];
    char token_id[40];       /* the operator token used, "" for a login or the CLI */
    char role[8];            /* owner, admin, viewer; "owner" for the CLI */
    const char *client_addr; /* NULL for the CLI */
    const char *request_id;  /* NULL for the CLI */
} api_actor_t;

/* Runs a parameterised statement whose first row's first column is JSON text
 * (built with json_build_object in SQL) and parses it into owned *out.
 * RL_ERR_NOT_FOUND when there is no row; otherwise rl_pg_query's statuses. */
rl_status_t api_query_json(rl_pg_t *pg, const char *sql, int n, const char *const *params,
                           json_t **out);

/* Appends one audit row for a mutation, inside the caller's transaction.
 * before/after are borrowed (NULL allowed) and must hold no secrets. */
rl_status_t api_audit(rl_pg_t *pg, const api_actor_t *actor, const char *action,
                      const char *target_type, const char *target_id, const json_t *before,
                      const json_t *after);

/* Writes a fresh UUIDv7 string into out[40]. */
void api_new_id(char out[40]);

#endif

/* px_types: the values the proxy's stages pass between them — the
 * configuration a request resolves to (tenant, agent, key, gate), usage and
 * tool calls, and the trace. Shared by px_cache, px_protocol, px_trace and the
 * engine. */
#ifndef PX_TYPES_H
#define PX_TYPES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PX_ID_LEN 40     /* a UUID string and its NUL, with room */
#define PX_NAME_MAX 201  /* names: 200 characters and a NUL */
#define PX_MODEL_MAX 201

/* ---- configuration (immutable once in a snapshot) ---------------------------------------- */

typedef enum { PX_KIND_OPENAI, PX_KIND_ANTHROPIC, PX_KIND_MCP, PX_KIND_HTTP } px_kind_t;
typedef enum { PX_STRATEGY_SINGLE, PX_STRATEGY_FALLBACK, PX_STRATEGY_ROUND_ROBIN } px_strategy_t;

typedef struct {
    char *name;  /* owned */
    char *value; /* owned, decrypted in memory only; never logged */
} px_header_t;

typedef struct px_gate {
    char id[PX_ID_LEN];
    char name[PX_NAME_MAX];
    px_kind_t kind;
    char *upstream_url;            /* owned base URL without trailing '/'; NULL: the default */
    char *pinned_model;            /* owned or NULL */
    px_strategy_t strategy;
    const struct px_gate **fallbacks; /* owned array of borrowed gates of the same agent */
    size_t nfallbacks;
    json_t *request_defaults;      /* owned object (system_prompt, temperature, max_tokens, top_p) */
    px_header_t *headers;          /* owned array */
    size_t nheaders;
    bool is_default;
    double soft_limit_usd, hard_limit_usd; /* session overrides; 0 = the agent's */
    long idle_timeout_s;                   /* 0 = the agent's */
} px_gate_t;

struct rl_policy_set;
struct rl_dlp_engine;

typedef struct px_tenant {
    char id[PX_ID_LEN];
    bool fail_closed; /* refuse its requests while the database is unreachable */
    struct rl_dlp_engine *dlp; /* borrowed from the snapshot: the tenant's engine (custom rules
                                * and overrides) or the snapshot's shared default; never NULL */
} px_tenant_t;

typedef struct px_agent {
    char id[PX_ID_LEN];
    char name[PX_NAME_MAX];
    const px_tenant_t *tenant;     /* borrowed from the snapshot */
    px_gate_t **gates;             /* owned array of owned gates */
    size_t ngates;
    const px_gate_t *default_gate; /* borrowed; NULL when the agent has no default */
    char default_policy_set_id[PX_ID_LEN]; /* "" when none */
    const struct rl_policy_set *policy_set; /* borrowed from the snapshot: the effective set
                                   * (default_policy_set_id, else the tenant's default set);
                                   * NULL: no policies, every request allowed */
    double soft_limit_usd;         /* 0: none */
    double hard_limit_usd;         /* 0: 2 x soft */
    long idle_timeout_s;
} px_agent_t;

typedef struct {
    uint8_t hash[32];              /* keyed hash of the key (rl_apikey_hash) */
    char id[PX_ID_LEN];
    const px_agent_t *agent;       /* borrowed */
    int64_t expires_at_ms;         /* 0: never */
} px_key_t;

typedef struct {
    double input_per_mtok, output_per_mtok;
    double cached_input_per_mtok;  /* < 0: priced as input */
    double cache_write_per_mtok;   /* < 0: priced as input */
} px_price_t;

/* ---- what a call used and did ---------------------------------------------------------- */

typedef struct {
    int64_t input_tokens;       /* every prompt token, cached and cache-written included */
    int64_t output_tokens;      /* reasoning included */
    int64_t cached_input_tokens;
    int64_t cache_write_tokens;
    int64_t reasoning_tokens;
    int64_t total_tokens;
    bool present;               /* the provider reported usage */
} px_usage_t;

typedef enum { PX_TOOL_REQUESTED, PX_TOOL_RESULT } px_tool_phase_t;

#define PX_MAX_TOOL_CALLS 32

typedef struct {
    char name[PX_NAME_MAX];     /* "" for a result whose call is not named in the body */
    char id[96];                /* the provider's call id, "" if none */
    px_tool_phase_t phase;
    char args_sha256[65];       /* hex of SHA-256 of the arguments (requested) or content (result) */
} px_tool_call_t;

typedef enum { PX_ACTION_CHAT, PX_ACTION_EMBEDDING, PX_ACTION_MCP, PX_ACTION_TOOL_CALL, PX_ACTION_HTTP } px_action_t;

/* The protocol family of a request path: decides the error shape too. */
typedef enum { PX_PROTO_OPENAI, PX_PROTO_ANTHROPIC, PX_PROTO_MCP, PX_PROTO_HTTP } px_proto_t;

#endif

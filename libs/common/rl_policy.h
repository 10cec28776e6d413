/* rl_policy: the policy engine shared by the proxy (request path step 5) and
 * the API (save-time validation, POST /v1/policies/evaluate). A tenant's
 * policies, as JSON rows, compile into an immutable set; evaluating the set
 * against one request's facts gives ALLOW, FLAG or DENY. The first matching
 * enabled policy in (priority, id) order decides; no match allows; any error
 * denies (fail closed). The grammar is docs/policies.md.
 *
 * Thread-safety: a compiled set is immutable and reference-counted; any number
 * of threads may evaluate it at once without locks. Evaluation allocates
 * nothing, except one PCRE2 match block per thread the first time that thread
 * matches a regex (freed when the thread exits). */
#ifndef RL_POLICY_H
#define RL_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_status.h"

/* Bounds, enforced at compile time with a precise error. */
#define RL_POLICY_ID_MAX 40                /* bytes of an id, NUL included */
#define RL_POLICY_MAX_POLICIES 10000       /* policies in one set */
#define RL_POLICY_MAX_NODES 256            /* conditions in one policy, nested ones included */
#define RL_POLICY_MAX_DEPTH 8              /* nesting of not / any_of / all_of */
#define RL_POLICY_MAX_LIST 1000            /* entries of one list (patterns, ids, days, ...) */
#define RL_POLICY_MAX_PATTERN 1024         /* bytes of one glob or regex */
#define RL_POLICY_REGEX_MATCH_LIMIT 100000 /* PCRE2 match limit; past it, evaluation fails */

typedef struct rl_policy_set rl_policy_set_t;

typedef enum { RL_POLICY_ALLOW = 0, RL_POLICY_FLAG, RL_POLICY_DENY } rl_policy_action_t;

/* What a compile or validation error is about. message is the whole
 * human-readable text, e.g. `policy "p1": conditions.time.start: "25:00" is
 * not a time of day (HH:MM, 00:00 to 23:59)`; the API returns it as is. */
typedef struct {
    char policy_id[RL_POLICY_ID_MAX]; /* the offending policy's id; "" if it has none */
    char field[128];   /* JSON path of the bad field ("conditions.model[1]"); may be "" */
    char message[512]; /* full message naming the policy and the field */
} rl_policy_error_t;

/* One request header, for callers that hold headers as an array. */
typedef struct {
    const char *name;
    const char *value;
} rl_policy_header_t;

/* The facts about one request. Every pointer is borrowed for the duration of
 * rl_policy_evaluate. A NULL string or an empty list means "absent": a
 * condition on an absent fact does not hold (so `not` of it does). */
typedef struct {
    const char *agent_id;          /* for scope.agents */
    const char *gate_id;           /* for scope.gates; NULL when the request names no gate */
    const char *action;            /* "chat", "embedding", "mcp", "tool_call" or "http" */
    const char *method;            /* "POST" */
    const char *path;              /* without the query string: "/v1/chat/completions" */
    const char *model;             /* as it will be forwarded (after a pin) */
    const char *user;              /* X-RenLayer-User */
    const char *const *tool_names; /* MCP tools/call name, tool calls and results in a chat body */
    size_t ntools;
    const char *const *dlp_detectors; /* ids of the DLP detectors that found something */
    size_t ndlp;
    int64_t estimated_input_tokens; /* < 0: unknown */
    int64_t now_unix;               /* seconds since the epoch, for time windows */
    /* Header lookup: header(header_ctx, name) returns the first value of the
     * header called name (given lowercase; the lookup must ignore case) or
     * NULL. When header is NULL, headers[0..nheaders) is searched instead
     * (names compared ignoring case, first one wins). */
    const char *(*header)(void *ctx, const char *name);
    void *header_ctx;
    const rl_policy_header_t *headers;
    size_t nheaders;
} rl_policy_input_t;

/* The decision. The strings are borrowed from the set: valid while the caller
 * holds a reference to it. */
typedef struct {
    rl_policy_action_t action; /* ALLOW when nothing matched; DENY when error */
    bool matched;              /* a policy matched and decided */
    bool error;                /* compiling or evaluating failed: action is DENY */
    const char *policy_id;     /* the deciding (or failing) policy's id; "" if none */
    const char *policy_name;   /* its name; "" if none */
    const char *message;       /* its message (shown to the agent on DENY); "" if none */
    char reason[256];          /* on error: what failed, naming the policy; else "" */
} rl_policy_result_t;

/* Inputs a set looks at, so the proxy skips work no policy needs
 * (rl_policy_set_needs). */
enum {
    RL_POLICY_NEEDS_TOOLS = 1u << 0,   /* a tool condition */
    RL_POLICY_NEEDS_DLP = 1u << 1,     /* a dlp condition: run detectors first */
    RL_POLICY_NEEDS_TOKENS = 1u << 2,  /* an input_tokens_above condition */
    RL_POLICY_NEEDS_HEADERS = 1u << 3, /* a headers condition */
    RL_POLICY_NEEDS_TIME = 1u << 4,    /* a time condition */
};

/* Compiles policies, a JSON array of policy objects {id, name, priority,
 * enabled, scope, conditions, action, message} as the API stores them (other
 * keys, like description or timestamps, are ignored). Every policy is
 * validated, disabled ones included; only enabled ones are evaluated.
 * Returns owned *out (release with rl_policy_set_destroy) with one reference.
 * On failure *out is untouched, err (may be NULL) says which policy and field
 * and why, and the status is RL_ERR_INVALID (bad policy), RL_ERR_TOO_LARGE (a
 * bound passed) or RL_ERR_NOMEM. Borrows policies. Loads time zones from
 * $TZDIR or /usr/share/zoneinfo. */
rl_status_t rl_policy_compile(const json_t *policies, rl_policy_set_t **out,
                              rl_policy_error_t *err);

/* The save-time check of one policy object: the same validation as
 * rl_policy_compile, except that id may be absent (not minted yet). Returns
 * RL_OK or the compile errors, with err (may be NULL) filled. */
rl_status_t rl_policy_validate_one(const json_t *policy, rl_policy_error_t *err);

/* Builds a set that denies every request as an error naming err->policy_id
 * with err->message as reason: what the proxy installs when a tenant's
 * policies do not compile, so that they fail closed. Returns owned *out. */
rl_status_t rl_policy_set_create_failed(const rl_policy_error_t *err, rl_policy_set_t **out);

/* Adds a reference to set and returns it (for a request or a cache slot that
 * outlives the holder of the first reference). Thread-safe. */
rl_policy_set_t *rl_policy_set_retain(rl_policy_set_t *set);

/* Drops one reference; the last one frees the set. NULL does nothing.
 * Thread-safe. */
void rl_policy_set_destroy(rl_policy_set_t *set);

/* Number of enabled policies the set evaluates. */
size_t rl_policy_set_count(const rl_policy_set_t *set);

/* The RL_POLICY_NEEDS_* bits of the inputs some enabled policy looks at. */
unsigned rl_policy_set_needs(const rl_policy_set_t *set);

/* Decides for one request. Never fails: a NULL set or input, a regex past
 * its match limit or any other error gives DENY with error set, policy_id
 * naming the policy being evaluated and reason saying why. Allocation-free;
 * thread-safe on a shared set. */
void rl_policy_evaluate(const rl_policy_set_t *set, const rl_policy_input_t *in,
                        rl_policy_result_t *out);

/* "ALLOW", "FLAG", "DENY". */
const char *rl_policy_action_str(rl_policy_action_t a);

/* The trace/decision status of a result: "ALLOWED", "FLAGGED", "DENIED". */
const char *rl_policy_status_str(rl_policy_action_t a);

/* Fills in from a JSON request description, the body of POST
 * /v1/policies/evaluate, so the API passes exactly what the proxy passes:
 * {"agent_id","gate_id","action","method","path","model","user": string|null,
 *  "tool_names","dlp_detectors": [string], "estimated_input_tokens": int,
 *  "now": int (Unix seconds), "headers": {name: string}}; absent keys are
 * absent facts (tokens -1), except now, which defaults to the current time.
 * An unknown key or action is refused. Strings are borrowed from obj, the two
 * lists are written to scratch (nscratch entries in all), headers are looked
 * up in obj's "headers" object: in is valid while obj and scratch are.
 * RL_ERR_INVALID with err naming the field on a bad shape, RL_ERR_TOO_LARGE
 * when the lists do not fit in scratch. */
rl_status_t rl_policy_input_from_json(const json_t *obj, rl_policy_input_t *in,
                                      const char **scratch, size_t nscratch,
                                      rl_policy_error_t *err);

/* The JSON form of a result, the answer of POST /v1/policies/evaluate:
 * {"decision","status","matched","error","policy_id","policy_name","message",
 *  "reason"} (ids, name, message and reason null when empty). Returns owned
 * JSON (json_decref) or NULL when out of memory. */
json_t *rl_policy_result_to_json(const rl_policy_result_t *r);

#endif

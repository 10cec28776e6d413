/* rl_dlp: the data-loss-prevention engine the proxy runs on requests and
 * (streamed) responses and the API runs for POST /v1/dlp/scan: built-in
 * detectors with validators, tenant overrides and custom PCRE2 rules,
 * compiled into one immutable engine; one-shot and streaming scans; the
 * verdict rule; redaction. docs/dlp.md describes every detector.
 *
 * Life cycle. A tenant's configuration is collected in an rl_dlp_config_t
 * (mutable, one owner) and compiled by rl_dlp_engine_create into an
 * rl_dlp_engine_t: immutable and reference-counted, so any number of threads
 * may scan it at once and a reload swaps the whole engine. The built-in
 * patterns are compiled (with JIT) once per process and shared by every
 * engine; an engine compiles only its tenant's custom rules.
 *
 * Scratch. pcre2_match needs match data and a JIT stack that one thread uses
 * at a time. They live in an rl_dlp_scratch_t: keep one per worker thread
 * and pass it to every scan (any engine); pass NULL to have a scan create and
 * free its own (two small allocations; built-ins run on PCRE2's default JIT
 * stack, custom rules on a 32..512 KiB one the scratch allocates lazily).
 *
 * Findings hold offsets only, never the matched bytes; nothing the engine
 * keeps or reports (error contexts included) contains scanned text.
 * Library code: nothing here logs. */
#ifndef RL_DLP_H
#define RL_DLP_H

#include <stdbool.h>
#include <stddef.h>

#include "rl_buf.h"
#include "rl_status.h"

/* Bounds on custom rules (the API's dlp_rules table has the same). */
#define RL_DLP_RULE_ID_MAX 64    /* rule id: 1..64 of [A-Za-z0-9_.-] */
#define RL_DLP_RULE_NAME_MAX 200 /* rule name: 1..200 bytes */
#define RL_DLP_PATTERN_MAX 4096  /* pattern: 1..4096 bytes */
#define RL_DLP_RULES_MAX 256     /* custom rules per engine */
/* PCRE2 match limit on every pattern, built-in and custom, per pcre2_match
 * call: about 2 ms of backtracking on this project's machine. */
#define RL_DLP_MATCH_LIMIT 1000000
/* Bytes of left context a stream keeps before the earliest point a future
 * match may start; a custom pattern's lookbehind may reach back at most
 * RL_DLP_CONTEXT / 4 characters (64: a UTF-8 character is up to 4 bytes). */
#define RL_DLP_CONTEXT 256
/* Longest a stream holds back a candidate that may still grow (a partial
 * match); past it the candidate is decided on the bytes that have arrived. */
#define RL_DLP_STREAM_HOLD_MAX 16384
/* Redaction marker: "[REDACTED:" detector "]". */
#define RL_DLP_REDACT_PREFIX "[REDACTED:"

typedef enum {
    RL_DLP_SEVERITY_LOW = 1,
    RL_DLP_SEVERITY_MEDIUM,
    RL_DLP_SEVERITY_HIGH,
    RL_DLP_SEVERITY_CRITICAL,
} rl_dlp_severity_t;

typedef enum {
    RL_DLP_ACTION_WARN = 1,
    RL_DLP_ACTION_REDACT,
    RL_DLP_ACTION_BLOCK,
} rl_dlp_action_t;

/* Where a custom rule applies, and (REQUEST or RESPONSE) what a scan scans. */
typedef enum {
    RL_DLP_SCOPE_REQUEST = 1,
    RL_DLP_SCOPE_RESPONSE = 2,
    RL_DLP_SCOPE_BOTH = 3,
} rl_dlp_scope_t;

/* The outcome of a scan, see rl_dlp_verdict. */
typedef enum {
    RL_DLP_CLEAN = 0,
    RL_DLP_WARNED,
    RL_DLP_BLOCKED,
} rl_dlp_verdict_t;

/* Built-in detectors. The id strings ("EMAIL", ...) are what findings,
 * traces and the dlp_findings table carry. */
typedef enum {
    RL_DLP_EMAIL = 0,
    RL_DLP_PHONE,
    RL_DLP_US_SSN,
    RL_DLP_CREDIT_CARD,
    RL_DLP_IBAN,
    RL_DLP_IP_ADDRESS,
    RL_DLP_AWS_ACCESS_KEY,
    RL_DLP_AWS_SECRET_KEY,
    RL_DLP_GITHUB_TOKEN,
    RL_DLP_SLACK_TOKEN,
    RL_DLP_STRIPE_KEY,
    RL_DLP_OPENAI_KEY,
    RL_DLP_ANTHROPIC_KEY,
    RL_DLP_GOOGLE_API_KEY,
    RL_DLP_PRIVATE_KEY,
    RL_DLP_JWT,
    RL_DLP_GENERIC_SECRET,
    RL_DLP_SOURCE_CODE,
    RL_DLP_BUILTIN_COUNT
} rl_dlp_builtin_t;

/* ---- names ------------------------------------------------------------ */

/* The id of built-in d ("CREDIT_CARD"); NULL when d is out of range. */
const char *rl_dlp_builtin_id(rl_dlp_builtin_t d);

/* Finds a built-in by id, case-insensitively ("credit_card" as stored in
 * dlp_builtin_overrides, or "CREDIT_CARD"). RL_ERR_NOT_FOUND otherwise;
 * *out is then untouched. */
rl_status_t rl_dlp_builtin_parse(const char *id, rl_dlp_builtin_t *out);

/* Default severity and action of built-in d (docs/dlp.md has the table);
 * 0 when d is out of range. */
rl_dlp_severity_t rl_dlp_builtin_severity(rl_dlp_builtin_t d);
rl_dlp_action_t rl_dlp_builtin_action(rl_dlp_builtin_t d);

/* Lower-case names as the database and bus spell them ("critical", "redact",
 * "both"); the verdict as a trace status ("CLEAN", "DLP_WARNED",
 * "DLP_BLOCKED"). "?" when out of range; never NULL. */
const char *rl_dlp_severity_str(rl_dlp_severity_t s);
const char *rl_dlp_action_str(rl_dlp_action_t a);
const char *rl_dlp_scope_str(rl_dlp_scope_t s);
const char *rl_dlp_verdict_str(rl_dlp_verdict_t v);

/* Parse those names (exact, lower case). RL_ERR_INVALID otherwise; *out is
 * then untouched. */
rl_status_t rl_dlp_severity_parse(const char *s, rl_dlp_severity_t *out);
rl_status_t rl_dlp_action_parse(const char *s, rl_dlp_action_t *out);
rl_status_t rl_dlp_scope_parse(const char *s, rl_dlp_scope_t *out);

/* ---- configuration ---------------------------------------------------- */

typedef struct rl_dlp_config rl_dlp_config_t;

/* A tenant's custom rule, as stored in dlp_rules. Strings are borrowed for
 * the call only (rl_dlp_config_add_rule copies them). */
typedef struct {
    const char *id;      /* reported as the finding's detector: the row's UUID */
    const char *name;    /* for people; not reported in redactions */
    const char *pattern; /* PCRE2, UTF-8 mode; checked by rl_dlp_validate_pattern */
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    rl_dlp_scope_t scope;
    bool enabled; /* a disabled rule is kept out of the engine */
} rl_dlp_rule_t;

/* Creates an empty configuration: every built-in on with its defaults, no
 * custom rule. Returns owned (free with rl_dlp_config_destroy).
 * RL_ERR_NOMEM; *out is then untouched. */
rl_status_t rl_dlp_config_create(rl_dlp_config_t **out);

/* Frees cfg; NULL does nothing. */
void rl_dlp_config_destroy(rl_dlp_config_t *cfg);

/* Overrides built-in d: enabled false turns it off; severity and action
 * replace the defaults, 0 keeps the default (dlp_builtin_overrides' NULL).
 * A later call for the same d replaces the earlier one.
 * RL_ERR_INVALID on an out-of-range d, severity or action; cfg unchanged. */
rl_status_t rl_dlp_config_set_builtin(rl_dlp_config_t *cfg, rl_dlp_builtin_t d, bool enabled,
                                      rl_dlp_severity_t severity, rl_dlp_action_t action);

/* Adds a copy of custom rule r, after checking it: id (1..64 of
 * [A-Za-z0-9_.-], not a built-in id, not already added), name
 * (1..RL_DLP_RULE_NAME_MAX bytes), severity, action, scope, and the pattern
 * with rl_dlp_validate_pattern. RL_ERR_INVALID (the error context names the
 * rule id and, for a pattern, the offset), RL_ERR_CONFLICT on a duplicate id,
 * RL_ERR_TOO_LARGE past RL_DLP_RULES_MAX rules or an oversize pattern,
 * RL_ERR_NOMEM. On error cfg is unchanged, so a loader can skip a bad row
 * and go on. A disabled rule is checked and counted but never compiled. */
rl_status_t rl_dlp_config_add_rule(rl_dlp_config_t *cfg, const rl_dlp_rule_t *r);

/* Checks a custom pattern as it will be compiled (UTF-8, the engine's
 * flags, limits and JIT): not empty, at most RL_DLP_PATTERN_MAX bytes,
 * compiles, cannot match the empty string (PCRE2's minimum length, and a
 * probe on a few short subjects for lookaround-only patterns such as
 * "(?=x)"), lookbehind at most RL_DLP_CONTEXT / 4 characters. On failure writes a one-line message
 * such as "pattern error at offset 4: missing closing parenthesis" to err (cap bytes,
 * NUL-terminated, truncated; err may be NULL when cap is 0) and returns RL_ERR_INVALID, or
 * RL_ERR_TOO_LARGE for an oversize pattern. For the API at save time. Thread-safe. */
rl_status_t rl_dlp_validate_pattern(const char *pattern, char *err, size_t cap);

/* ---- engine ----------------------------------------------------------- */

typedef struct rl_dlp_engine rl_dlp_engine_t;

/* Compiles cfg (borrowed; NULL = every built-in with its defaults) into an
 * immutable engine holding one reference. Returns owned (release with
 * rl_dlp_engine_release). RL_ERR_INVALID when a custom pattern does not
 * compile (the error names the rule id), RL_ERR_NOMEM, RL_ERR_INTERNAL when
 * a built-in pattern fails to compile (a bug); *out is then untouched. */
rl_status_t rl_dlp_engine_create(const rl_dlp_config_t *cfg, rl_dlp_engine_t **out);

/* Takes one more reference to e and returns e. Thread-safe. */
rl_dlp_engine_t *rl_dlp_engine_retain(rl_dlp_engine_t *e);

/* Drops one reference; the last frees the engine. NULL does nothing.
 * Thread-safe. Findings' detector strings die with the engine. */
void rl_dlp_engine_release(rl_dlp_engine_t *e);

/* Number of active rules (enabled built-ins and enabled custom rules). */
size_t rl_dlp_engine_rule_count(const rl_dlp_engine_t *e);

/* ---- scratch ---------------------------------------------------------- */

typedef struct rl_dlp_scratch rl_dlp_scratch_t;

/* Creates per-thread matching state usable with any engine. Returns owned
 * (free with rl_dlp_scratch_destroy). RL_ERR_NOMEM; *out then untouched.
 * One thread at a time may use a scratch. */
rl_status_t rl_dlp_scratch_create(rl_dlp_scratch_t **out);

/* Frees s; NULL does nothing. */
void rl_dlp_scratch_destroy(rl_dlp_scratch_t *s);

/* ---- findings --------------------------------------------------------- */

typedef struct {
    const char *detector;       /* built-in id or the custom rule's id; borrowed from the engine */
    int builtin;                /* rl_dlp_builtin_t, or -1 for a custom rule */
    rl_dlp_severity_t severity; /* after the tenant's overrides */
    rl_dlp_action_t action;     /* after the tenant's overrides */
    size_t start, end;          /* bytes [start, end) of the scanned text (a stream: absolute) */
} rl_dlp_finding_t;

/* A bounded list of findings. Past max, findings are counted in dropped and
 * the worst verdict among them is kept in dropped_verdict, so rl_dlp_verdict
 * stays right; rl_dlp_redact refuses an incomplete list. */
typedef struct {
    rl_dlp_finding_t *items; /* owned */
    size_t len, cap;
    size_t max; /* hard limit on len */
    size_t dropped;
    rl_dlp_verdict_t dropped_verdict;
} rl_dlp_findings_t;

/* Prepares an empty list holding at most max findings. Allocates nothing. */
void rl_dlp_findings_init(rl_dlp_findings_t *f, size_t max);

/* Empties the list (dropped counters too) and keeps its memory. */
void rl_dlp_findings_reset(rl_dlp_findings_t *f);

/* Frees the memory; f may be reused after rl_dlp_findings_init. */
void rl_dlp_findings_free(rl_dlp_findings_t *f);

/* Appends src's findings to dst, past dst's max counted as dropped as a scan
 * counts them, and src's dropped ones with their verdict. RL_ERR_NOMEM when
 * dst cannot grow (dst then holds a prefix). */
rl_status_t rl_dlp_findings_merge(rl_dlp_findings_t *dst, const rl_dlp_findings_t *src);

/* ---- scanning --------------------------------------------------------- */

/* Scans len bytes of text (UTF-8 or not; JSON is scanned as raw text, so a
 * "\n" escape is two bytes) as a request or a response (where: REQUEST or
 * RESPONSE; custom rules apply by their scope, built-ins to both).
 * Empties out, then fills it sorted by start (then by end, longest first).
 * Where a built-in finding overlaps another built-in's with a higher rank
 * (docs/dlp.md: a specific key outranks GENERIC_SECRET, a card outranks a
 * phone number...) only the higher is kept; SOURCE_CODE and custom rules
 * are never merged away. scratch: the calling thread's, or NULL.
 * Errors: RL_ERR_INVALID (bad where), RL_ERR_NOMEM, RL_ERR_TIMEOUT when a
 * pattern reached RL_DLP_MATCH_LIMIT (a catastrophic custom pattern: the
 * error context names the rule and offset; the other rules still ran and
 * out holds what they found; treat the text as not scanned).
 * Thread-safe on a shared engine: e is only read. */
rl_status_t rl_dlp_scan(const rl_dlp_engine_t *e, rl_dlp_scope_t where, const char *text,
                        size_t len, rl_dlp_scratch_t *scratch, rl_dlp_findings_t *out);

/* The verdict for a list of findings, DESIGN's rule made exact:
 *   BLOCKED if any finding has action block, or has severity critical and
 *           an action other than redact (critical blocks unless its rule
 *           redacts instead);
 *   WARNED  otherwise if there is any finding (redacted ones included);
 *   CLEAN   if there is none.
 * Dropped findings count through dropped_verdict. */
rl_dlp_verdict_t rl_dlp_verdict(const rl_dlp_findings_t *f);

/* The verdict one finding alone would give (BLOCKED or WARNED). */
rl_dlp_verdict_t rl_dlp_finding_verdict(const rl_dlp_finding_t *f);

/* Appends to out a copy of len bytes of text in which the span of every
 * finding with action redact is replaced by "[REDACTED:<detector>]";
 * overlapping spans are merged into one marker naming the detector of the
 * earliest (then longest) of them. base is the absolute offset of text[0]
 * (0 for a one-shot scan; a stream's released offset): findings outside
 * [base, base + len) are ignored, ones crossing its edges are clipped.
 * Findings need not be sorted. RL_ERR_TOO_LARGE when out's bound is reached
 * or when f dropped findings (the redaction would be incomplete),
 * RL_ERR_NOMEM; out is then as it was. */
rl_status_t rl_dlp_redact(const char *text, size_t len, size_t base, const rl_dlp_findings_t *f,
                          rl_buf_t *out);

/* rl_dlp_redact with every finding replaced, whatever its action: for copies
 * that must hold no detected value (a trace's bodies). */
rl_status_t rl_dlp_redact_every(const char *text, size_t len, size_t base,
                                const rl_dlp_findings_t *f, rl_buf_t *out);

/* ---- streaming -------------------------------------------------------- */

/* A response scanned as it arrives. Each feed rescans only what may still
 * hold a match: every rule resumes where its last search stopped, and a
 * candidate that touches the end of the data so far (a PCRE2 partial match:
 * "AKIA12" of a key id) is held until more bytes decide it, up to
 * RL_DLP_STREAM_HOLD_MAX bytes. Every finding is reported exactly once, with
 * absolute offsets, and the findings equal those of rl_dlp_scan over the
 * whole text as long as no match is longer than RL_DLP_STREAM_HOLD_MAX
 * (built-ins never are). The release point ("safe") never lies inside a
 * reported finding, so what is released never changes afterwards.
 * One thread at a time per stream; the engine is retained for the stream's
 * life. Memory: the held bytes plus RL_DLP_CONTEXT, plus what was fed but
 * not yet released. */
typedef struct rl_dlp_stream rl_dlp_stream_t;

/* Creates a stream over engine e (retained) for where (REQUEST or RESPONSE).
 * Returns owned (free with rl_dlp_stream_destroy). RL_ERR_INVALID,
 * RL_ERR_NOMEM; *out is then untouched. */
rl_status_t rl_dlp_stream_create(rl_dlp_engine_t *e, rl_dlp_scope_t where, rl_dlp_stream_t **out);

/* Frees s and releases its engine reference; NULL does nothing. */
void rl_dlp_stream_destroy(rl_dlp_stream_t *s);

/* Feeds n bytes (a copy is kept until released). Appends the findings that
 * became certain to out (not emptied first), each reported once over the
 * stream's life; they may arrive out of start order across feeds.
 * Errors as rl_dlp_scan, plus RL_ERR_CONFLICT after finish; after
 * RL_ERR_NOMEM the stream is unusable (destroy it). On
 * RL_ERR_TIMEOUT the stream stays usable (that rule is skipped for the
 * bytes fed); treat the response as not scanned. */
rl_status_t rl_dlp_stream_feed(rl_dlp_stream_t *s, const char *data, size_t n,
                               rl_dlp_scratch_t *scratch, rl_dlp_findings_t *out);

/* Ends the stream: every held candidate is decided and the remaining
 * findings appended to out; afterwards everything fed is safe. */
rl_status_t rl_dlp_stream_finish(rl_dlp_stream_t *s, rl_dlp_scratch_t *scratch,
                                 rl_dlp_findings_t *out);

/* Absolute offset up to which the fed bytes are final: no finding not yet
 * reported can start before it, and no reported finding straddles it. */
size_t rl_dlp_stream_safe(const rl_dlp_stream_t *s);

/* Bytes fed so far, and bytes released so far. */
size_t rl_dlp_stream_total(const rl_dlp_stream_t *s);
size_t rl_dlp_stream_released(const rl_dlp_stream_t *s);

/* Releases the bytes [released, safe): appends them to out with every
 * reported redact finding replaced as rl_dlp_redact does, and lets the
 * stream forget them. out NULL releases without copying (the caller forwards
 * its own copy of the bytes and redacts it itself). Call it after every feed,
 * or the stream keeps everything fed. RL_ERR_TOO_LARGE when out's bound is
 * reached (nothing is released then), RL_ERR_NOMEM. */
rl_status_t rl_dlp_stream_release(rl_dlp_stream_t *s, rl_buf_t *out);

/* ---- validators (used by the detectors; exposed for tests and reuse) --- */

/* Luhn checksum over the digits of s[0..n), skipping ' ' and '-'; false
 * on any other byte or fewer than 2 digits. */
bool rl_dlp_luhn_valid(const char *s, size_t n);

/* A payment card number: 12..19 digits (separators ' ' or '-' skipped), an
 * issuer prefix of a card network (Visa, Mastercard, Amex, Discover, Diners,
 * JCB, UnionPay, Maestro) with a length that network issues, and Luhn. */
bool rl_dlp_card_valid(const char *s, size_t n);

/* An IBAN: a known country with its exact length (single spaces between
 * characters allowed), alphanumeric, upper case, check digits by mod-97. */
bool rl_dlp_iban_valid(const char *s, size_t n);

/* A US SSN as issued since 2011 ("AAA-GG-SSSS", "AAA GG SSSS" or nine
 * digits): area not 000, 666 or 900-999, group not 00, serial not 0000. */
bool rl_dlp_ssn_valid(const char *s, size_t n);

/* Dotted-quad IPv4: four decimal octets 0..255, no leading zeros. */
bool rl_dlp_ipv4_valid(const char *s, size_t n);

/* IPv6 text form (RFC 4291, with "::" and an embedded IPv4 tail), as
 * inet_pton accepts it. */
bool rl_dlp_ipv6_valid(const char *s, size_t n);

/* A JWS compact token: three base64url segments (the signature may not be
 * empty) whose first decodes to a JSON object with a string "alg" and whose
 * second is valid base64url. */
bool rl_dlp_jwt_valid(const char *s, size_t n);

/* Shannon entropy of the bytes s[0..n), in bits per byte (0 when n is 0). */
double rl_dlp_entropy(const char *s, size_t n);

#endif

/* px_guard_internal: what px_guard.c (the request) and px_guard_response.c
 * (the response) share. Not for other modules. */
#ifndef PX_GUARD_INTERNAL_H
#define PX_GUARD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "px_internal.h"
#include "rl_buf.h"
#include "rl_dlp.h"

#define PX_GUARD_FINDINGS_MAX 256 /* findings kept per scan */

/* The worker's DLP scratch, made on first use; NULL when that failed (a scan
 * then makes its own). */
rl_dlp_scratch_t *px_guard_scratch(px_worker_t *w);
/* Whether e has any rule to run. */
bool px_guard_engine_active(const rl_dlp_engine_t *e);
/* Records f for the trace and the decision: one entry per detector, place
 * ("request", "response") and action. */
void px_guard_add_finding(px_request_t *req, const rl_dlp_finding_t *f, const char *where);
/* Copies text into out with every finding (any action) redacted. False when
 * that is not possible (findings were dropped, out's bound): out is empty. */
bool px_guard_redact_all(const char *text, size_t len, const rl_dlp_findings_t *f, rl_buf_t *out);
/* Whether a finding of f is to be redacted. */
bool px_guard_any_redact(const rl_dlp_findings_t *f);
/* "AWS_SECRET_KEY, EMAIL": the detectors of the blocking findings (or all). */
void px_guard_detector_list(const rl_dlp_findings_t *f, bool blocking_only, char *out, size_t cap);
/* Copies text into req->reason, cut at a UTF-8 character boundary. */
void px_guard_set_reason(px_request_t *req, const char *text);
/* Counts a decision status in the proxy's metrics. */
void px_guard_count(px_request_t *req, const char *status);

#endif

/* rl_query: a URL query string (or a form body, the same format) as DLP
 * reads and redacts it (docs/dlp.md, "Query strings and form bodies").
 *
 * A query's names and values are percent-encoded ('+' for a space), which
 * hides values from a byte scanner: every form encoder writes '/' as %2F and
 * '@' as %40. rl_query_decode gives the text to scan, its pairs decoded and
 * joined by '&'; rl_query_redact rebuilds the query with each pair a redact
 * finding touches replaced by the finding's marker. */
#ifndef RL_QUERY_H
#define RL_QUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "rl_buf.h"
#include "rl_dlp.h"
#include "rl_status.h"

/* Where one name[=value] pair lies in the query and in the decoded text. */
typedef struct {
    size_t raw_start, raw_end;   /* the pair in the query, without its '&' */
    size_t raw_value;            /* where its value starts in the query (after the first '='),
                                    raw_end when it has no '=' */
    size_t text_start, text_end; /* the decoded pair in the text */
    size_t text_value;           /* where its decoded value starts in the text, text_end
                                    when it has no '=' */
} rl_query_pair_t;

/* Writes q[0..n) decoded to text (emptied first): each pair's name and value percent-decoded
 * (libcurl's unescape; '+' is a space, a malformed escape is kept as it is),
 * "name=value" pairs joined by '&'. pairs, when not NULL, receives an owned
 * array (free) of *npairs entries, NULL when q has no pair. RL_ERR_NOMEM,
 * RL_ERR_TOO_LARGE past text's bound; text and *pairs are then reset. */
rl_status_t rl_query_decode(const char *q, size_t n, rl_buf_t *text, rl_query_pair_t **pairs,
                            size_t *npairs);

/* Writes q[0..n) to out with every pair a redact finding of f (any finding
 * when every: a copy that must hold no detected value) touches rewritten:
 * its value replaced by the percent-encoded marker "[REDACTED:<DETECTOR>]"
 * (of the first such finding), or the whole pair when the finding reaches
 * into its name. f's offsets are into the text rl_query_decode gave for q
 * and pairs. Untouched pairs are copied as sent. RL_ERR_NOMEM,
 * RL_ERR_TOO_LARGE past out's bound or when f dropped findings (as
 * rl_dlp_redact), RL_ERR_INVALID for pairs outside q; out is then empty. */
rl_status_t rl_query_redact(const char *q, size_t n, const rl_query_pair_t *pairs, size_t npairs,
                            const rl_dlp_findings_t *f, bool every, rl_buf_t *out);

/* Whether a Content-Type value names a form body
 * (application/x-www-form-urlencoded, any case, parameters allowed). */
bool rl_query_is_form_type(const char *content_type);

#endif

/* px_decode: a request body the agent compressed (Content-Encoding), decoded
 * before anything reads it, so that classification, policies, DLP and the
 * trace see what the body says and a compressed body cannot carry a secret
 * past the scan. The decoded body is what the upstream receives (the
 * Content-Encoding header is not forwarded).
 *
 * Codings: gzip (x-gzip), deflate (zlib, or raw deflate as some clients
 * send it) and identity, a list of them in the order they were applied
 * ("deflate, gzip"). zlib does the inflating; the output is bounded by the
 * buffer's limit, so a small bomb cannot expand past the body limit. */
#ifndef PX_DECODE_H
#define PX_DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include "rl_buf.h"
#include "rl_status.h"

/* True when a body with this Content-Encoding value must be decoded (NULL,
 * empty and "identity" need nothing). */
bool px_decode_needed(const char *content_encoding);

/* Decodes n bytes of in, encoded as content_encoding says, into out (reset
 * first; its limit bounds the decoded size). RL_OK; RL_ERR_NOT_FOUND for a
 * coding other than those above (br, zstd, compress: the caller answers
 * 415); RL_ERR_INVALID for data that is not what the coding says, truncated,
 * or followed by trailing bytes; RL_ERR_TOO_LARGE past out's limit;
 * RL_ERR_NOMEM. The error detail (rl_error_last) names the coding. */
rl_status_t px_decode_body(const char *content_encoding, const void *in, size_t n, rl_buf_t *out);

#endif

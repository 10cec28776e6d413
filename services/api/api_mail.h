/* api_mail: plain-text mails (login codes) over SMTP with libcurl.
 *
 * api_mail_send() delivers one message synchronously. The api uses an
 * api_mailer_t instead: one background thread draining a bounded queue, so
 * an HTTP request never waits on the mail server — and the time a login
 * code request takes does not tell whether the address has an account.
 *
 * TLS: smtps:// is TLS from the first byte; smtp:// must upgrade with
 * STARTTLS, except to a loopback host (a local relay), where STARTTLS is used
 * when offered. Credentials are sent only over TLS (or to loopback). */
#ifndef API_MAIL_H
#define API_MAIL_H

#include <stddef.h>
#include <time.h>

#include "rl_metrics.h"
#include "rl_status.h"

/* Most mails waiting in a mailer's queue by default. */
#define API_MAIL_QUEUE_MAX 256
/* Bound on one delivery (connect, dialogue, upload) when timeout_ms is 0. */
#define API_MAIL_TIMEOUT_MS 15000
/* Largest formatted message, in bytes. */
#define API_MAIL_MAX_SIZE 65536

/* Where mail goes. Strings are borrowed by api_mail_send and copied by
 * api_mailer_create. */
typedef struct {
    const char *url;      /* smtp://host[:port] or smtps://host[:port]; required */
    const char *from;     /* "Name <addr@host>" or "addr@host"; required */
    const char *user;     /* NULL or "": no SMTP AUTH */
    const char *password; /* with user */
    long timeout_ms;      /* bound on one delivery; 0: API_MAIL_TIMEOUT_MS */
} api_mail_server_t;

/* Formats an RFC 5322 message (Date, From, To, Subject, Message-ID,
 * MIME-Version, Content-Type text/plain UTF-8; CRLF line ends, body lines
 * converted) dated date. Returns owned *out (free()) and its length in *len.
 * RL_ERR_INVALID when from, to or subject hold a control character or the
 * address is not addr@host (no header injection), RL_ERR_TOO_LARGE past
 * API_MAIL_MAX_SIZE, RL_ERR_NOMEM; *out is then untouched. */
rl_status_t api_mail_format(const char *from, const char *to, const char *subject, const char *body,
                            time_t date, char **out, size_t *len);

/* Delivers one message to `to` through srv, blocking up to its timeout.
 * RL_ERR_INVALID for a bad address or URL, RL_ERR_UNAVAILABLE when the
 * server cannot be reached or refuses the mail (curl's reason in
 * rl_error_last()), RL_ERR_TIMEOUT, RL_ERR_NOMEM. Thread-safe. */
rl_status_t api_mail_send(const api_mail_server_t *srv, const char *to, const char *subject,
                          const char *body);

typedef struct api_mailer api_mailer_t;

/* Starts a background sender for srv (copied) with a queue of at most
 * queue_max mails (0: API_MAIL_QUEUE_MAX). It counts outcomes in metrics
 * (borrowed, may be NULL) as renlayer_api_mails_total{result="sent"|
 * "failed"|"dropped"} and logs failed deliveries (never the body). *out is
 * set only on success (free with api_mailer_destroy). RL_ERR_INVALID for a
 * missing url or from, RL_ERR_NOMEM, RL_ERR_IO when the thread cannot start. */
rl_status_t api_mailer_create(const api_mail_server_t *srv, size_t queue_max, rl_metrics_t *metrics,
                              api_mailer_t **out);

/* Queues one mail (strings copied). RL_ERR_TOO_LARGE when the queue is full
 * (the mail is dropped and counted), RL_ERR_CONFLICT once destroy started,
 * RL_ERR_NOMEM. Thread-safe. */
rl_status_t api_mailer_enqueue(api_mailer_t *m, const char *to, const char *subject,
                               const char *body);

/* Stops accepting, delivers what is queued for at most drain_ms more
 * milliseconds (the rest is dropped and counted; a delivery under way runs
 * to its own timeout), joins the thread and frees. NULL does nothing. */
void api_mailer_destroy(api_mailer_t *m, long drain_ms);

#endif

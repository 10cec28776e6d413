/* SMTP delivery with libcurl, and the background mailer the api uses. */
#include "api_mail.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_buf.h"
#include "rl_log.h"
#include "rl_uuid.h"
#include "rl_cond.h"

/* ---- formatting ----------------------------------------------------------------------- */

static bool has_control(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

/* Copies the bare address of "Name <addr>" or "addr" into out; false when it
 * is not one '@' with something on each side and no space or angle bracket. */
static bool bare_address(const char *s, char *out, size_t cap)
{
    const char *lt = strrchr(s, '<');
    const char *start = s, *end = s + strlen(s);
    if (lt) {
        const char *gt = strchr(lt, '>');
        if (gt == NULL || gt[1] != '\0')
            return false;
        start = lt + 1;
        end = gt;
    }
    size_t n = (size_t)(end - start);
    if (n < 3 || n >= cap)
        return false;
    memcpy(out, start, n);
    out[n] = '\0';
    const char *at = strchr(out, '@');
    if (at == NULL || at == out || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    for (const char *p = out; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == '"' || *p == ',')
            return false;
    }
    return true;
}

rl_status_t api_mail_format(const char *from, const char *to, const char *subject, const char *body,
                            time_t date, char **out, size_t *len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char from_addr[328], to_addr[328];
    if (from == NULL || to == NULL || subject == NULL || body == NULL || has_control(from) ||
        has_control(to) || has_control(subject) ||
        !bare_address(from, from_addr, sizeof from_addr) ||
        !bare_address(to, to_addr, sizeof to_addr))
        return rl_error(RL_ERR_INVALID, "mail: bad address or subject");
    struct tm tm;
    if (gmtime_r(&date, &tm) == NULL)
        return rl_error(RL_ERR_INVALID, "mail: bad date");
    rl_uuid_t id;
    char id_text[RL_UUID_STR_LEN + 1];
    if (rl_uuid_v7(&id) != RL_OK)
        return rl_error(RL_ERR_INTERNAL, "mail: message id");
    rl_uuid_format(&id, id_text);

    rl_buf_t b;
    rl_buf_init(&b, API_MAIL_MAX_SIZE);
    rl_status_t st = rl_buf_appendf(&b,
                                    "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n"
                                    "From: %s\r\n"
                                    "To: <%s>\r\n"
                                    "Subject: %s\r\n"
                                    "Message-ID: <%s@%s>\r\n"
                                    "MIME-Version: 1.0\r\n"
                                    "Content-Type: text/plain; charset=utf-8\r\n"
                                    "Content-Transfer-Encoding: 8bit\r\n"
                                    "Auto-Submitted: auto-generated\r\n"
                                    "\r\n",
                                    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                                    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, from,
                                    to_addr, subject, id_text, strchr(from_addr, '@') + 1);
    /* Bare LF (or CR) line ends become CRLF, as SMTP requires. */
    for (const char *p = body; st == RL_OK && *p; p++) {
        if (*p == '\r' && p[1] == '\n')
            continue;
        st = (*p == '\n' || *p == '\r') ? rl_buf_append(&b, "\r\n", 2) : rl_buf_append(&b, p, 1);
    }
    if (st == RL_OK && (b.len < 2 || memcmp(b.data + b.len - 2, "\r\n", 2) != 0))
        st = rl_buf_append(&b, "\r\n", 2);
    if (st != RL_OK) {
        rl_buf_free(&b);
        return rl_error(st, "mail: message too large");
    }
    *out = rl_buf_take(&b, len);
    return RL_OK;
}

/* ---- delivery ------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void init_curl(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct {
    const char *data;
    size_t len, pos;
} upload_t;

static size_t read_upload(char *dst, size_t size, size_t nmemb, void *ud)
{
    upload_t *u = ud;
    size_t n = size * nmemb, left = u->len - u->pos;
    if (n > left)
        n = left;
    memcpy(dst, u->data + u->pos, n);
    u->pos += n;
    return n;
}

/* True when the URL's host is a loopback name or address. */
static bool loopback_host(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL;
    bool loop = false;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        loop = strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
               strcmp(host, "[::1]") == 0;
    }
    curl_free(host);
    curl_url_cleanup(u);
    return loop;
}

rl_status_t api_mail_send(const api_mail_server_t *srv, const char *to, const char *subject,
                          const char *body)
{
    if (srv == NULL || srv->url == NULL || srv->from == NULL)
        return rl_error(RL_ERR_INVALID, "mail: no server");
    bool smtps = strncmp(srv->url, "smtps://", 8) == 0;
    if (!smtps && strncmp(srv->url, "smtp://", 7) != 0)
        return rl_error(RL_ERR_INVALID, "mail: url must be smtp:// or smtps://");
    pthread_once(&curl_once, init_curl);
    if (curl_init_result != CURLE_OK)
        return rl_error(RL_ERR_INTERNAL, "mail: curl_global_init failed");

    char *msg = NULL;
    size_t msglen = 0;
    rl_status_t st = api_mail_format(srv->from, to, subject, body, time(NULL), &msg, &msglen);
    if (st != RL_OK)
        return st;
    char from_addr[328], to_addr[328], mail_from[332], rcpt[332];
    bare_address(srv->from, from_addr, sizeof from_addr);
    bare_address(to, to_addr, sizeof to_addr);
    snprintf(mail_from, sizeof mail_from, "<%s>", from_addr);
    snprintf(rcpt, sizeof rcpt, "<%s>", to_addr);

    CURL *c = curl_easy_init();
    struct curl_slist *rcpts = curl_slist_append(NULL, rcpt);
    if (c == NULL || rcpts == NULL) {
        curl_easy_cleanup(c);
        curl_slist_free_all(rcpts);
        free(msg);
        return rl_error(RL_ERR_NOMEM, "mail: curl handle");
    }
    long timeout = srv->timeout_ms > 0 ? srv->timeout_ms : API_MAIL_TIMEOUT_MS;
    upload_t up = {msg, msglen, 0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, srv->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout < 5000 ? timeout : 5000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    /* A local relay may lack TLS; anything across the network must upgrade. */
    if (!smtps)
        curl_easy_setopt(c, CURLOPT_USE_SSL,
                         loopback_host(srv->url) ? (long)CURLUSESSL_TRY : (long)CURLUSESSL_ALL);
    if (srv->user && srv->user[0]) {
        curl_easy_setopt(c, CURLOPT_USERNAME, srv->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, srv->password ? srv->password : "");
    }
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, mail_from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)msglen);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_upload);
    curl_easy_setopt(c, CURLOPT_READDATA, &up);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(rcpts);
    curl_easy_cleanup(c);
    free(msg);
    if (rc == CURLE_OK)
        return RL_OK;
    return rl_error(rc == CURLE_OPERATION_TIMEDOUT ? RL_ERR_TIMEOUT : RL_ERR_UNAVAILABLE,
                    "mail: %s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* ---- background mailer ---------------------------------------------------------------- */

typedef struct mail {
    struct mail *next;
    char *to, *subject, *body;
} mail_t;

struct api_mailer {
    char *url, *from, *user, *password;
    api_mail_server_t srv; /* points at the copies above */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mail_t *head, *tail;
    size_t queued, queue_max;
    bool stopping;
    struct timespec drain_deadline;
    rl_counter_t *sent, *failed, *dropped;
};

static void mail_free(mail_t *m)
{
    if (m == NULL)
        return;
    free(m->to);
    free(m->subject);
    if (m->body) /* it holds a login code: do not leave it in freed memory */
        memset(m->body, 0, strlen(m->body));
    free(m->body);
    free(m);
}

static bool past(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static void *mailer_main(void *arg)
{
    api_mailer_t *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->mu);
        while (m->head == NULL && !m->stopping)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->head == NULL || (m->stopping && past(&m->drain_deadline))) {
            size_t left = m->queued;
            mail_t *rest = m->head;
            m->head = m->tail = NULL;
            m->queued = 0;
            pthread_mutex_unlock(&m->mu);
            while (rest) {
                mail_t *next = rest->next;
                mail_free(rest);
                rest = next;
            }
            if (left > 0) {
                rl_counter_add(m->dropped, left);
                rl_log(RL_LOG_WARN, "mails dropped at shutdown", "{s:i}", "count", (int)left);
            }
            return NULL;
        }
        mail_t *mail = m->head;
        m->head = mail->next;
        if (m->head == NULL)
            m->tail = NULL;
        m->queued--;
        pthread_mutex_unlock(&m->mu);

        rl_status_t st = api_mail_send(&m->srv, mail->to, mail->subject, mail->body);
        if (st == RL_OK) {
            rl_counter_add(m->sent, 1);
            rl_log(RL_LOG_DEBUG, "mail sent", "{s:s}", "to", mail->to);
        } else {
            rl_counter_add(m->failed, 1);
            rl_log(RL_LOG_WARN, "mail delivery failed", "{s:s,s:s,s:s}", "to", mail->to, "status",
                   rl_status_str(st), "detail", rl_error_last());
        }
        mail_free(mail);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void mailer_free(api_mailer_t *m)
{
    free(m->url);
    free(m->from);
    free(m->user);
    free(m->password);
    free(m);
}

rl_status_t api_mailer_create(const api_mail_server_t *srv, size_t queue_max, rl_metrics_t *metrics,
                              api_mailer_t **out)
{
    if (srv == NULL || srv->url == NULL || srv->from == NULL)
        return rl_error(RL_ERR_INVALID, "mailer: url and from are required");
    api_mailer_t *m = calloc(1, sizeof *m);
    if (m == NULL)
        return rl_error(RL_ERR_NOMEM, "mailer");
    m->url = strdup(srv->url);
    m->from = strdup(srv->from);
    m->user = dup_or_null(srv->user);
    m->password = dup_or_null(srv->password);
    if (m->url == NULL || m->from == NULL || (srv->user && m->user == NULL) ||
        (srv->password && m->password == NULL)) {
        mailer_free(m);
        return rl_error(RL_ERR_NOMEM, "mailer");
    }
    m->srv = (api_mail_server_t){m->url, m->from, m->user, m->password, srv->timeout_ms};
    m->queue_max = queue_max ? queue_max : API_MAIL_QUEUE_MAX;
    if (metrics) {
        static const char help[] = "Mails the api handed to SMTP, by outcome";
        rl_metrics_counter(metrics, "renlayer_api_mails_total", help, "result=\"sent\"", &m->sent);
        rl_metrics_counter(metrics, "renlayer_api_mails_total", help, "result=\"failed\"",
                           &m->failed);
        rl_metrics_counter(metrics, "renlayer_api_mails_total", help, "result=\"dropped\"",
                           &m->dropped);
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, mailer_main, m) != 0) {
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        mailer_free(m);
        return rl_error(RL_ERR_IO, "mailer: thread");
    }
    *out = m;
    return RL_OK;
}

rl_status_t api_mailer_enqueue(api_mailer_t *m, const char *to, const char *subject,
                               const char *body)
{
    mail_t *mail = calloc(1, sizeof *mail);
    if (mail == NULL)
        return rl_error(RL_ERR_NOMEM, "mailer");
    mail->to = strdup(to);
    mail->subject = strdup(subject);
    mail->body = strdup(body);
    if (mail->to == NULL || mail->subject == NULL || mail->body == NULL) {
        mail_free(mail);
        return rl_error(RL_ERR_NOMEM, "mailer");
    }
    rl_status_t st = RL_OK;
    pthread_mutex_lock(&m->mu);
    if (m->stopping) {
        st = rl_error(RL_ERR_CONFLICT, "mailer: stopping");
    } else if (m->queued >= m->queue_max) {
        st = rl_error(RL_ERR_TOO_LARGE, "mailer: queue full (%zu mails)", m->queue_max);
        rl_counter_add(m->dropped, 1);
    } else {
        if (m->tail)
            m->tail->next = mail;
        else
            m->head = mail;
        m->tail = mail;
        m->queued++;
        mail = NULL;
        pthread_cond_signal(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    mail_free(mail);
    return st;
}

void api_mailer_destroy(api_mailer_t *m, long drain_ms)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    m->drain_deadline = rl_cond_deadline(drain_ms);
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    mailer_free(m);
}

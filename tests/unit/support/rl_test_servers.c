/* rl_test_servers: private PostgreSQL and nats-server instances for the unit
 * tests, and the polling and path helpers they share. */
#include "rl_test_servers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- the registry the atexit handler empties ---- */

typedef struct fixture {
    struct fixture *next;
    void (*destroy)(struct fixture *f); /* unregisters, stops, removes, frees */
    int reaper;                         /* write end of the reaper's pipe, or -1 */
} fixture_t;

static fixture_t *live;

static void destroy_all(void)
{
    while (live)
        live->destroy(live);
}

static void track(fixture_t *f, void (*destroy)(fixture_t *f))
{
    static bool hooked;
    if (!hooked)
        hooked = atexit(destroy_all) == 0;
    f->destroy = destroy;
    f->next = live;
    live = f;
}

static void untrack(fixture_t *f)
{
    for (fixture_t **p = &live; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            return;
        }
    }
}

/* ---- time, paths, ports, processes ---- */

int64_t rl_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rl_test_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

bool rl_test_wait_until(bool (*cond)(void *arg), void *arg, int64_t timeout_ms)
{
    int64_t end = rl_test_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (rl_test_now_ms() >= end)
            return false;
        rl_test_sleep_ms(5);
    }
}

bool rl_test_source_path(const char *rel, char *buf, size_t len)
{
    const char *root = getenv("RL_SOURCE_DIR");
    int n;
    if (root && *root) {
        n = snprintf(buf, len, "%s/%s", root, rel);
    } else {
        /* this file is <root>/tests/unit/support/rl_test_servers.c */
        const char *f = __FILE__;
        const char *slash = strrchr(f, '/');
        n = slash ? snprintf(buf, len, "%.*s/../../../%s", (int)(slash - f), f, rel)
                  : snprintf(buf, len, "../../../%s", rel);
    }
    return n > 0 && (size_t)n < len && access(buf, R_OK) == 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes /tmp/<name>.XXXXXX into dir. */
static rl_status_t make_dir(const char *name, char *dir, size_t len)
{
    int n = snprintf(dir, len, "/tmp/%s.XXXXXX", name ? name : "rl_test");
    if (n < 0 || (size_t)n >= len)
        return rl_error(RL_ERR_INVALID, "test folder name too long: %s", name);
    if (!mkdtemp(dir)) {
        dir[0] = '\0';
        return rl_error(RL_ERR_IO, "mkdtemp: %s", strerror(errno));
    }
    return RL_OK;
}

/* A TCP port on 127.0.0.1 that nothing listens on now, as text, below the
 * kernel's ephemeral range (32768-60999): a port from bind(0) is also what
 * the kernel gives outgoing connections as their source port, and one of
 * those could take it before the server binds it. */
static rl_status_t free_port(char *buf, size_t len)
{
    static unsigned seed;
    if (seed == 0)
        seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    for (int attempt = 0; attempt < 200; attempt++) {
        unsigned port = 20000 + (unsigned)rand_r(&seed) % 12768;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return rl_error(RL_ERR_IO, "socket: %s", strerror(errno));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
        close(fd);
        if (rc == 0) {
            snprintf(buf, len, "%u", port);
            return RL_OK;
        }
    }
    return rl_error(RL_ERR_IO, "free port: none found in 200 tries");
}

static bool port_answers(const char *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    char *end;
    long p = strtol(port, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535) {
        close(fd);
        return false;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Spawns bash with args (NULL-terminated, at most 6); the child keeps only
 * stdin, stdout and stderr. -1 when it cannot be spawned. */
static pid_t spawn_bash(const char *const *args)
{
    char *argv[8] = {(char *)"bash"};
    for (size_t i = 0; i < 6 && args[i]; i++)
        argv[i + 1] = (char *)args[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    pid_t pid;
    int rc = posix_spawnp(&pid, "bash", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

/* The exit code of child pid, or -1 when it did not exit normally. */
static int wait_child(pid_t pid)
{
    if (pid <= 0)
        return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The crash path. A detached shell waits on a pipe whose write end only this
 * process holds: EOF (the process died, however: abort, a sanitizer's report,
 * CTest's SIGKILL of the process tree) makes it run `bash pgsh stop data`
 * when pgsh is given and remove dir; a byte (a clean destroy) lets it go.
 * pg.sh daemonises PostgreSQL, so this is what stops it after a crash. */
static rl_status_t spawn_reaper(fixture_t *f, const char *pgsh, const char *data, const char *dir)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return rl_error(RL_ERR_IO, "pipe: %s", strerror(errno));
    char *argv[] = {"bash",
                    "-c",
                    "( read -r -N 1 _ <&3 || { [ -z \"$0\" ] || bash \"$0\" stop \"$1\"; "
                    "rm -rf \"$2\"; } ) &",
                    (char *)(pgsh ? pgsh : ""),
                    (char *)(data ? data : ""),
                    (char *)dir,
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[0], 3);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    pid_t pid;
    int rc = posix_spawnp(&pid, "bash", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    /* the outer shell returns at once, leaving the waiting one to init */
    if (rc != 0 || wait_child(pid) != 0) {
        close(fds[1]);
        return rl_error(RL_ERR_IO, "cannot spawn the reaper for %s", dir);
    }
    f->reaper = fds[1];
    return RL_OK;
}

static void disarm_reaper(fixture_t *f)
{
    if (f->reaper < 0)
        return;
    while (write(f->reaper, "x", 1) < 0 && errno == EINTR)
        ;
    close(f->reaper);
    f->reaper = -1;
}

/* ---- PostgreSQL ---- */

struct rl_test_pg {
    fixture_t link; /* first: the registry casts */
    char dir[256];  /* /tmp/<name>.XXXXXX */
    char data[300]; /* <dir>/data */
    char pgsh[PATH_MAX];
    char port[16];
    char url[128];
    pid_t starter; /* pg.sh start under way, or 0 */
    bool maybe_up; /* a start was tried since the last stop */
    bool running;
};

static int pg_sh(rl_test_pg_t *pg, const char *cmd)
{
    const char *args[] = {pg->pgsh, cmd, pg->data, NULL};
    return wait_child(spawn_bash(args));
}

static void pg_destroy_link(fixture_t *f)
{
    rl_test_pg_destroy((rl_test_pg_t *)f);
}

rl_status_t rl_test_pg_create(const char *name, rl_test_pg_t **out)
{
    rl_test_pg_t *pg = calloc(1, sizeof *pg);
    if (!pg)
        return rl_error(RL_ERR_NOMEM, "rl_test_pg_create");
    if (!rl_test_source_path("tests/harness/pg.sh", pg->pgsh, sizeof pg->pgsh)) {
        free(pg);
        return rl_error(RL_ERR_NOT_FOUND, "tests/harness/pg.sh not found (set RL_SOURCE_DIR)");
    }
    pg->link.reaper = -1;
    rl_status_t st = make_dir(name, pg->dir, sizeof pg->dir);
    if (st == RL_OK)
        st = free_port(pg->port, sizeof pg->port);
    if (st == RL_OK) {
        snprintf(pg->data, sizeof pg->data, "%s/data", pg->dir);
        snprintf(pg->url, sizeof pg->url, "postgresql://renlayer@127.0.0.1:%s/postgres", pg->port);
        st = spawn_reaper(&pg->link, pg->pgsh, pg->data, pg->dir);
    }
    if (st == RL_OK && pg_sh(pg, "init") != 0)
        st = rl_error(RL_ERR_IO, "pg.sh init %s failed", pg->data);
    if (st != RL_OK) {
        disarm_reaper(&pg->link);
        remove_tree(pg->dir);
        free(pg);
        return st;
    }
    track(&pg->link, pg_destroy_link);
    *out = pg;
    return RL_OK;
}

rl_status_t rl_test_pg_start_async(rl_test_pg_t *pg)
{
    if (pg->running || pg->starter > 0)
        return rl_error(RL_ERR_CONFLICT, "PostgreSQL runs or is starting");
    const char *args[] = {pg->pgsh, "start", pg->data, pg->port, NULL};
    pg->starter = spawn_bash(args);
    if (pg->starter < 0) {
        pg->starter = 0;
        return rl_error(RL_ERR_IO, "cannot spawn bash %s", pg->pgsh);
    }
    pg->maybe_up = true;
    return RL_OK;
}

rl_status_t rl_test_pg_start_wait(rl_test_pg_t *pg)
{
    if (pg->starter <= 0)
        return rl_error(RL_ERR_CONFLICT, "no PostgreSQL start under way");
    int rc = wait_child(pg->starter);
    pg->starter = 0;
    if (rc != 0)
        return rl_error(RL_ERR_UNAVAILABLE, "pg.sh start failed (see %s/server.log)", pg->data);
    pg->running = true;
    return RL_OK;
}

rl_status_t rl_test_pg_start(rl_test_pg_t *pg)
{
    if (pg->running)
        return RL_OK;
    rl_status_t st = rl_test_pg_start_async(pg);
    return st == RL_OK ? rl_test_pg_start_wait(pg) : st;
}

rl_status_t rl_test_pg_stop(rl_test_pg_t *pg)
{
    if (pg->starter > 0)
        rl_test_pg_start_wait(pg);
    pg->running = false;
    if (!pg->maybe_up)
        return RL_OK;
    pg->maybe_up = false;
    if (pg_sh(pg, "stop") != 0)
        return rl_error(RL_ERR_UNAVAILABLE, "pg.sh stop %s failed", pg->data);
    return RL_OK;
}

rl_status_t rl_test_pg_restart(rl_test_pg_t *pg)
{
    rl_status_t st = rl_test_pg_stop(pg);
    return st == RL_OK ? rl_test_pg_start(pg) : st;
}

bool rl_test_pg_running(const rl_test_pg_t *pg)
{
    return pg->running;
}

const char *rl_test_pg_url(const rl_test_pg_t *pg)
{
    return pg->url;
}

void rl_test_pg_destroy(rl_test_pg_t *pg)
{
    if (!pg)
        return;
    untrack(&pg->link);
    rl_test_pg_stop(pg);
    remove_tree(pg->dir);
    disarm_reaper(&pg->link);
    free(pg);
}

/* ---- nats-server ---- */

struct rl_test_nats {
    fixture_t link;  /* first: the registry casts */
    char dir[256];   /* /tmp/<name>.XXXXXX */
    char store[300]; /* <dir>/js */
    char log[300];   /* <dir>/nats.log */
    char port[16];
    char url[64];
    pid_t pid; /* 0 when no server runs */
    bool paused;
};

static void nats_destroy_link(fixture_t *f)
{
    rl_test_nats_destroy((rl_test_nats_t *)f);
}

rl_status_t rl_test_nats_create(const char *name, rl_test_nats_t **out)
{
    rl_test_nats_t *n = calloc(1, sizeof *n);
    if (!n)
        return rl_error(RL_ERR_NOMEM, "rl_test_nats_create");
    n->link.reaper = -1;
    rl_status_t st = make_dir(name, n->dir, sizeof n->dir);
    if (st == RL_OK)
        st = free_port(n->port, sizeof n->port);
    if (st == RL_OK)
        st = spawn_reaper(&n->link, NULL, NULL, n->dir);
    if (st != RL_OK) {
        disarm_reaper(&n->link);
        remove_tree(n->dir);
        free(n);
        return st;
    }
    snprintf(n->store, sizeof n->store, "%s/js", n->dir);
    snprintf(n->log, sizeof n->log, "%s/nats.log", n->dir);
    snprintf(n->url, sizeof n->url, "nats://127.0.0.1:%s", n->port);
    track(&n->link, nats_destroy_link);
    *out = n;
    return RL_OK;
}

rl_status_t rl_test_nats_start(rl_test_nats_t *n)
{
    if (n->pid > 0)
        return RL_OK;
    char *argv[] = {"nats-server", "-a", "127.0.0.1", "-p", n->port, "-js", "-sd", n->store, NULL};
    int log = open(n->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log < 0 || null < 0) {
        int err = errno;
        if (log >= 0)
            close(log);
        if (null >= 0)
            close(null);
        return rl_error(RL_ERR_IO, "open %s: %s", n->log, strerror(err));
    }
    /* fork rather than posix_spawn: the child must ask to die with us */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* a child of a threaded parent: async-signal-safe calls only */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (dup2(null, STDIN_FILENO) < 0 || dup2(log, STDOUT_FILENO) < 0 ||
            dup2(log, STDERR_FILENO) < 0)
            _exit(127);
        close_range(3, ~0U, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    int err = errno;
    close(log);
    close(null);
    if (pid < 0)
        return rl_error(RL_ERR_IO, "fork: %s", strerror(err));
    n->pid = pid;
    int64_t end = rl_test_now_ms() + RL_TEST_SERVER_WAIT_MS;
    while (!port_answers(n->port)) {
        pid_t w = waitpid(pid, NULL, WNOHANG);
        if (w > 0 || (w < 0 && errno != EINTR)) {
            n->pid = 0;
            return rl_error(RL_ERR_UNAVAILABLE, "nats-server exited (see %s)", n->log);
        }
        if (rl_test_now_ms() >= end) {
            rl_test_nats_stop(n);
            return rl_error(RL_ERR_UNAVAILABLE, "nats-server did not answer on port %s (see %s)",
                            n->port, n->log);
        }
        rl_test_sleep_ms(5);
    }
    return RL_OK;
}

rl_status_t rl_test_nats_stop(rl_test_nats_t *n)
{
    if (n->pid <= 0)
        return RL_OK;
    if (n->paused)
        kill(n->pid, SIGCONT);
    n->paused = false;
    kill(n->pid, SIGTERM);
    int64_t end = rl_test_now_ms() + RL_TEST_SERVER_WAIT_MS;
    pid_t w;
    while ((w = waitpid(n->pid, NULL, WNOHANG)) == 0 || (w < 0 && errno == EINTR)) {
        if (rl_test_now_ms() >= end) {
            kill(n->pid, SIGKILL);
            waitpid(n->pid, NULL, 0);
            break;
        }
        rl_test_sleep_ms(5);
    }
    n->pid = 0;
    return RL_OK;
}

rl_status_t rl_test_nats_restart(rl_test_nats_t *n)
{
    rl_test_nats_stop(n);
    return rl_test_nats_start(n);
}

/* True once every thread of the process is in the stopped state: kill()
 * returns before a thread running on the other core has been stopped, and
 * that thread could still answer a message sent right after. */
static bool all_threads_stopped(void *arg)
{
    pid_t pid = *(const pid_t *)arg;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return false;
    bool stopped = true;
    struct dirent *e;
    while (stopped && (e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char stat_path[sizeof path + sizeof e->d_name + 8], line[512];
        snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, e->d_name);
        FILE *fp = fopen(stat_path, "r");
        if (!fp)
            continue; /* the thread has exited */
        bool got = fgets(line, sizeof line, fp) != NULL;
        fclose(fp);
        const char *paren = got ? strrchr(line, ')') : NULL;
        stopped = paren && (paren[2] == 'T' || paren[2] == 't');
    }
    closedir(dir);
    return stopped;
}

rl_status_t rl_test_nats_pause(rl_test_nats_t *n)
{
    if (n->pid <= 0 || n->paused)
        return rl_error(RL_ERR_CONFLICT, "nats-server does not run or is paused");
    if (kill(n->pid, SIGSTOP) != 0)
        return rl_error(RL_ERR_IO, "SIGSTOP: %s", strerror(errno));
    n->paused = true;
    pid_t pid = n->pid;
    if (!rl_test_wait_until(all_threads_stopped, &pid, 5000))
        return rl_error(RL_ERR_TIMEOUT, "nats-server did not stop within 5 s");
    return RL_OK;
}

rl_status_t rl_test_nats_resume(rl_test_nats_t *n)
{
    if (n->pid <= 0 || !n->paused)
        return rl_error(RL_ERR_CONFLICT, "nats-server is not paused");
    if (kill(n->pid, SIGCONT) != 0)
        return rl_error(RL_ERR_IO, "SIGCONT: %s", strerror(errno));
    n->paused = false;
    return RL_OK;
}

bool rl_test_nats_running(const rl_test_nats_t *n)
{
    return n->pid > 0;
}

bool rl_test_nats_paused(const rl_test_nats_t *n)
{
    return n->paused;
}

const char *rl_test_nats_url(const rl_test_nats_t *n)
{
    return n->url;
}

const char *rl_test_nats_dir(const rl_test_nats_t *n)
{
    return n->dir;
}

void rl_test_nats_destroy(rl_test_nats_t *n)
{
    if (!n)
        return;
    untrack(&n->link);
    rl_test_nats_stop(n);
    remove_tree(n->dir);
    disarm_reaper(&n->link);
    free(n);
}

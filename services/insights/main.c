/* renlayer-insights: analyses finished sessions (issue: insights).
 * Today it runs the service frame: configuration, logging, PostgreSQL and
 * NATS connections with readiness, health and metrics endpoints; its consumer
 * is added by the issue named above. */
#include <stdlib.h>

#include "rl_service.h"

int main(int argc, char **argv)
{
    const rl_service_spec_t spec = {
        .name = "insights",
        .default_listen_addr = "127.0.0.1:8084",
        .uses_db = true,
        .uses_bus = true,
    };
    rl_service_t *svc = NULL;
    rl_status_t st = rl_service_start(&spec, argc, argv, &svc);
    if (st == RL_ERR_NOT_FOUND)
        return EXIT_SUCCESS; /* --help-config */
    if (st != RL_OK)
        return EXIT_FAILURE;
    rl_service_run(svc);
    rl_service_stop(svc);
    return EXIT_SUCCESS;
}

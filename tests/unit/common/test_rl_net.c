#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "rl_net.h"

static void parses_v4_v6_and_any(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    assert_int_equal(rl_net_parse_listen("127.0.0.1:8080", &ss), RL_OK);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    assert_int_equal(rl_net_parse_listen("[::1]:0", &ss), RL_OK);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(rl_net_parse_listen(":9090", &ss), RL_OK);
    rl_net_set_port(&ss, 1234);
    unsigned port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    assert_int_equal(port, 1234);
}

static void refuses_garbage(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    assert_int_equal(rl_net_parse_listen("nonsense", &ss), RL_ERR_INVALID);
    assert_int_equal(rl_net_parse_listen("127.0.0.1:http", &ss), RL_ERR_INVALID);
    assert_int_equal(rl_net_parse_listen("999.1.1.1:80", &ss), RL_ERR_INVALID);
    assert_int_equal(rl_net_parse_listen(NULL, &ss), RL_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_v4_v6_and_any),
        cmocka_unit_test(refuses_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

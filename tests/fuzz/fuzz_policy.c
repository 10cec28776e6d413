/* Fuzzes the policy engine with any policies and any request description,
 * as the API receives them (POST /v1/policies/evaluate takes both).
 *
 * Input: policies JSON text, NUL, request JSON text.
 * Properties: compiling either succeeds or says which policy and field are
 * wrong; a set compiles only if each of its policies passes the save-time
 * check alone; evaluation never fails open (an error denies), a match names
 * its policy, no match allows, and the same request gets the same answer
 * twice. */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "rl_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t pn = nul ? (size_t)(nul - data) : size;
    json_t *policies = json_loadb((const char *)data, pn, 0, NULL);
    if (!json_is_array(policies)) {
        json_decref(policies);
        return 0;
    }
    rl_policy_set_t *set = NULL;
    rl_policy_error_t err;
    memset(&err, 0, sizeof err);
    rl_status_t st = rl_policy_compile(policies, &set, &err);
    FUZZ_CHECK(st == RL_OK || st == RL_ERR_INVALID || st == RL_ERR_TOO_LARGE, "status %d", (int)st);
    if (st != RL_OK) {
        FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) && err.message[0] != '\0',
                   "an error without a message");
        FUZZ_CHECK(memchr(err.field, '\0', sizeof err.field) != NULL, "field not terminated");
        FUZZ_CHECK(set == NULL, "a set despite the error");
        /* What the proxy installs instead denies everything. */
        FUZZ_CHECK(rl_policy_set_create_failed(&err, &set) == RL_OK, "failed set");
    } else {
        size_t i;
        json_t *p;
        json_array_foreach(policies, i, p)
        {
            rl_policy_error_t one;
            FUZZ_CHECK(rl_policy_validate_one(p, &one) == RL_OK,
                       "policy %zu compiles in a set but fails alone: %s", i, one.message);
        }
    }

    json_t *req = nul ? json_loadb((const char *)nul + 1, size - pn - 1, 0, NULL) : NULL;
    const char *scratch[64];
    rl_policy_input_t in;
    if (json_is_object(req) && rl_policy_input_from_json(req, &in, scratch, 64, &err) == RL_OK) {
        rl_policy_result_t a, b;
        rl_policy_evaluate(set, &in, &a);
        rl_policy_evaluate(set, &in, &b);
        FUZZ_CHECK(a.action == RL_POLICY_ALLOW || a.action == RL_POLICY_FLAG ||
                       a.action == RL_POLICY_DENY,
                   "action %d", (int)a.action);
        if (st != RL_OK)
            FUZZ_CHECK(a.error && a.action == RL_POLICY_DENY, "a broken set did not deny");
        if (a.error)
            FUZZ_CHECK(a.action == RL_POLICY_DENY && a.reason[0] != '\0', "an error not denying");
        else if (a.matched)
            FUZZ_CHECK(a.policy_id && a.policy_id[0] != '\0', "a match without a policy id");
        else
            FUZZ_CHECK(a.action == RL_POLICY_ALLOW, "no match, yet not allowed");
        FUZZ_CHECK(a.action == b.action && a.matched == b.matched && a.error == b.error &&
                       strcmp(a.policy_id, b.policy_id) == 0,
                   "two evaluations differ");
        json_t *out = rl_policy_result_to_json(&a);
        FUZZ_CHECK(out != NULL, "result JSON");
        json_decref(out);
    }
    json_decref(req);
    rl_policy_set_destroy(set);
    json_decref(policies);
    return 0;
}

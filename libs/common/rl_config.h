/* rl_config: typed settings from RENLAYER_* environment variables.
 *
 * A service declares one table of rl_config_option_t, each pointing at the
 * variable it fills; rl_config_load() reads the environment, applies defaults,
 * validates every option and reports every problem at once, so a bad start
 * names all the variables to fix. */
#ifndef RL_CONFIG_H
#define RL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "rl_status.h"

typedef enum {
    RL_CFG_STRING,   /* const char *: borrowed from the environment or the default */
    RL_CFG_INT,      /* long, within [min, max] */
    RL_CFG_BOOL,     /* bool: true/false/1/0/yes/no/on/off */
    RL_CFG_URL,      /* const char *: must start with a scheme from `schemes` */
    RL_CFG_ADDR,     /* const char *: host:port with a port in 0..65535 */
    RL_CFG_LOGLEVEL, /* rl_log_level_t */
    RL_CFG_HEXKEY,   /* uint8_t[32]: exactly 64 hex characters */
    RL_CFG_ENUM,     /* const char *: one of the comma list in `schemes` */
} rl_config_type_t;

typedef struct {
    const char *name;          /* full variable name, "RENLAYER_DATABASE_URL" */
    rl_config_type_t type;
    const char *default_value; /* text form; NULL means no default */
    bool required;             /* an empty or missing value is an error */
    const char *help;          /* one line for the configuration table */
    long min, max;             /* RL_CFG_INT bounds (both 0: any long) */
    const char *schemes;       /* RL_CFG_URL: schemes, RL_CFG_ENUM: choices; comma lists */
    void *target;              /* where the parsed value goes; see the types */
} rl_config_option_t;

/* Reads every option from the environment (defaults where unset). Returns
 * RL_OK, or RL_ERR_INVALID with one line per bad option written to errbuf
 * ("RENLAYER_X: must be ..."), truncated to cap. Targets of valid options are
 * set even when others fail. Strings borrow the environment: do not setenv()
 * these names afterwards. */
rl_status_t rl_config_load(const rl_config_option_t *opts, size_t n, char *errbuf, size_t cap);

/* Writes a Markdown table (name, default, description) of the options to
 * out, for `--help-config`. */
void rl_config_print_table(const rl_config_option_t *opts, size_t n, void *file);

#endif

/* rl_net: network address helpers shared by the HTTP listeners. */
#ifndef RL_NET_H
#define RL_NET_H

#include <sys/socket.h>

#include "rl_status.h"

/* Resolves a listen address "host:port", "[v6]:port" or ":port" (every
 * interface) into *out. RL_ERR_INVALID (with the reason) for anything else. */
rl_status_t rl_net_parse_listen(const char *addr, struct sockaddr_storage *out);

/* Sets the port of an IPv4 or IPv6 address. */
void rl_net_set_port(struct sockaddr_storage *addr, unsigned port);

#endif

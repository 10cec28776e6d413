/* api_openapi_data: services/api/openapi.json embedded at build time. */
#ifndef API_OPENAPI_DATA_H
#define API_OPENAPI_DATA_H

#include <stddef.h>

extern const char api_openapi_json[];
extern const size_t api_openapi_json_len;

#endif

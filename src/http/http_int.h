/* Private to src/http: how a transfer gets its URL. */
#ifndef ASSETFS_HTTP_INT_H
#define ASSETFS_HTTP_INT_H

#include <curl/curl.h>
#include <stdbool.h>

#include "assetfs/error.h"

/* Checks url (afs_http_allow_check) and sets it on e as a parsed CURLU, so that curl
 * connects to exactly the origin that was checked, with http/https as the only
 * protocols (redirects too) and redirects not followed. *hu: free with
 * curl_url_cleanup after the transfer. false with AFS_E_URL_REFUSED (EACCES) when
 * refused. */
bool afs_http_setup_url(CURL *e, const char *url, CURLU **hu, struct afs_error *err);

#endif

/*
 * addr.c - parse HOST:PORT arguments for both command lines (see addr.h)
 */
#include "sink/addr.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>

int addr_parse(const char *arg, int passive, struct sockaddr_storage *ss, socklen_t *len, char *err,
               size_t errlen)
{
	char host[256], *port, *h = host;
	struct addrinfo hints, *res;
	int rc;

	if (strlen(arg) >= sizeof(host)) {
		snprintf(err, errlen, "address too long");
		return -1;
	}
	strcpy(host, arg);
	port = strrchr(host, ':');
	if (!port || !port[1]) {
		snprintf(err, errlen, "expected HOST:PORT");
		return -1;
	}
	*port++ = 0;
	/* getaddrinfo() takes "70000" and wraps it to 4464: check the range. */
	{
		unsigned long v = 0;
		for (const char *q = port; *q; q++) {
			if (*q < '0' || *q > '9' || (v = v * 10 + (unsigned long)(*q - '0')) > 65535) {
				snprintf(err, errlen, "port must be a number 0..65535");
				return -1;
			}
		}
	}
	if (h[0] == '[') { /* [IPv6]:port, RFC 3986 style */
		size_t n = strlen(h);
		if (n < 2 || h[n - 1] != ']') {
			snprintf(err, errlen, "unbalanced [ ]");
			return -1;
		}
		h[n - 1] = 0;
		h++;
	}
	if (!*h && !passive) {
		snprintf(err, errlen, "a host is required");
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	rc = getaddrinfo(*h ? h : NULL, port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "%s", gai_strerror(rc));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

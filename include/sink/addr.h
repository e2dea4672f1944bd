/*
 * addr.h - "HOST:PORT" / "[V6]:PORT" / ":PORT" command-line addresses
 */
#ifndef SINK_ADDR_H
#define SINK_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* addr_parse - resolve arg into *ss.  passive: an empty host means the
 * wildcard (listening); otherwise a host is required.  Returns 0, or -1
 * with a one-line reason in err. */
int addr_parse(const char *arg, int passive, struct sockaddr_storage *ss, socklen_t *len, char *err,
               size_t errlen);

#endif

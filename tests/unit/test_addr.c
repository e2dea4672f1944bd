/*
 * test_addr.c - HOST:PORT parsing for --listen and --target
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>

#include "sink/addr.h"

static int parse(const char *a, int passive, struct sockaddr_storage *ss)
{
	socklen_t len;
	char err[128];

	return addr_parse(a, passive, ss, &len, err, sizeof(err));
}

Test(addr, ipv4_and_ipv6)
{
	struct sockaddr_storage ss;

	cr_assert_eq(parse("127.0.0.1:2525", 0, &ss), 0);
	cr_assert_eq(ss.ss_family, AF_INET);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 2525);
	cr_assert_eq(parse("[::1]:65535", 0, &ss), 0);
	cr_assert_eq(ss.ss_family, AF_INET6);
	cr_assert_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 65535);
	cr_assert_eq(parse(":0", 1, &ss), 0);
}

Test(addr, port_range_is_checked)
{
	struct sockaddr_storage ss;

	/* getaddrinfo() would wrap 70000 to 4464 */
	cr_assert_eq(parse("127.0.0.1:70000", 0, &ss), -1);
	cr_assert_eq(parse("127.0.0.1:65536", 1, &ss), -1);
	cr_assert_eq(parse("127.0.0.1:99999999999999999999", 1, &ss), -1);
	cr_assert_eq(parse("127.0.0.1:-1", 1, &ss), -1);
	cr_assert_eq(parse("127.0.0.1:25x", 1, &ss), -1);
	cr_assert_eq(parse("127.0.0.1:", 1, &ss), -1);
	cr_assert_eq(parse(":25", 0, &ss), -1); /* a target needs a host */
	cr_assert_eq(parse("[::1:25", 0, &ss), -1);
}

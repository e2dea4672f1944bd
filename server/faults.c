/*
 * faults.c - smtpsink's fault plan from its options (docs/faults.md):
 * --fault / --fault-file rules, --seed, --address-faults, --greylist,
 * --rate-limit, --max-conns-per-ip.  Built once before the workers start and
 * again on SIGHUP: the new plan is published with a release store, the old
 * one is kept until exit (a worker may still be inside it, and its counts
 * belong in the summary), and the stateful policies (greylist, rate limit,
 * per-address connections) are shared by both, so their state survives.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* build - a plan from the options' rules (files read now). */
static struct fault_plan *build(struct server *srv, char *err, size_t errlen)
{
	const struct server_cfg *cfg = &srv->cfg;
	struct fault_plan *p = fault_plan_new(cfg->seed);
	char e[512];

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (int i = 0; i < cfg->nfault_rules; i++) {
		const char *r = cfg->fault_rules[i];
		if (fault_plan_add(p, r, strlen(r), e, sizeof(e))) {
			snprintf(err, errlen, "--fault \"%s\": %s", r, e);
			goto fail;
		}
	}
	for (int i = 0; i < cfg->nfault_files; i++) {
		size_t len;
		char *text = file_slurp(cfg->fault_files[i], &len);
		if (!text) {
			snprintf(err, errlen, "cannot read --fault-file %s: %s",
			         cfg->fault_files[i], strerror(errno));
			goto fail;
		}
		int r = fault_plan_add_file(p, text, len, e, sizeof(e));
		free(text);
		if (r) {
			snprintf(err, errlen, "--fault-file %s: %s", cfg->fault_files[i], e);
			goto fail;
		}
	}
	fault_plan_set_address_faults(p, cfg->address_faults);
	fault_plan_set_greylist(p, srv->greylist);
	fault_plan_set_rate(p, srv->rate);
	return p;
fail:
	fault_plan_free(p);
	return NULL;
}

int faults_setup(struct server *srv, char *err, size_t errlen)
{
	struct server_cfg *cfg = &srv->cfg;
	char e[256];

	if (cfg->greylist_ns) {
		struct fault_greylist_cfg g;
		fault_greylist_cfg_defaults(&g, cfg->greylist_ns);
		if (cfg->greylist_expiry_ns)
			g.expiry_ns = cfg->greylist_expiry_ns;
		if (cfg->greylist_max)
			g.max = cfg->greylist_max;
		if (fault_greylist_new(&g, &srv->greylist)) {
			snprintf(err, errlen, "--greylist: cannot set up the table");
			return -1;
		}
	}
	if (cfg->rate_limit) {
		struct fault_rate_cfg rc;
		if (fault_rate_parse(cfg->rate_limit, &rc, e, sizeof(e))) {
			snprintf(err, errlen, "--rate-limit '%s': %s", cfg->rate_limit, e);
			return -1;
		}
		if (fault_rate_new(&rc, &srv->rate)) {
			snprintf(err, errlen, "--rate-limit: out of memory");
			return -1;
		}
		if (cfg->rate_limit_reply &&
		    fault_rate_set_reply(srv->rate, cfg->rate_limit_reply, e, sizeof(e))) {
			snprintf(err, errlen, "--rate-limit-reply '%s': %s", cfg->rate_limit_reply,
			         e);
			return -1;
		}
	} else if (cfg->rate_limit_reply) {
		snprintf(err, errlen, "--rate-limit-reply needs --rate-limit");
		return -1;
	}
	if (cfg->max_conns_per_ip &&
	    fault_connlimit_new(cfg->max_conns_per_ip, cfg->max_conns ? cfg->max_conns : 65536,
	                        &srv->connlimit)) {
		snprintf(err, errlen, "--max-conns-per-ip: out of memory");
		return -1;
	}
	if (cfg->nfault_rules || cfg->nfault_files || cfg->address_faults || srv->greylist ||
	    srv->rate) {
		struct fault_plan *p = build(srv, err, errlen);
		if (!p)
			return -1;
		atomic_store_explicit(&srv->plan, p, memory_order_release);
		cfg->sess.faults = true;
	}
	srv->need_peer = cfg->sess.faults || srv->connlimit;
	return 0;
}

int faults_reload(struct server *srv, char *err, size_t errlen)
{
	struct fault_plan *p, *old;

	if (!srv->cfg.sess.faults) {
		snprintf(err, errlen, "no fault rules or policies configured at start");
		return -1;
	}
	if (srv->nretired == (int)(sizeof(srv->retired) / sizeof(srv->retired[0]))) {
		snprintf(err, errlen, "too many reloads");
		return -1;
	}
	p = build(srv, err, errlen);
	if (!p)
		return -1;
	old = atomic_exchange_explicit(&srv->plan, p, memory_order_acq_rel);
	srv->retired[srv->nretired++] = old;
	return 0;
}

void faults_teardown(struct server *srv)
{
	fault_plan_free(atomic_load(&srv->plan));
	for (int i = 0; i < srv->nretired; i++)
		fault_plan_free(srv->retired[i]);
	fault_greylist_free(srv->greylist);
	fault_rate_free(srv->rate);
	fault_connlimit_free(srv->connlimit);
}

/* faults_report - the current plan's rules in canonical form with their
 * counts (a reload starts them at 0), for the JSON "faults" list. */
json_t *faults_report(struct server *srv)
{
	const struct fault_plan *p = atomic_load_explicit(&srv->plan, memory_order_acquire);
	json_t *list = json_array();

	for (uint32_t i = 0; i < fault_plan_nrules(p); i++) {
		char text[FAULT_RULE_MAX + 64];
		uint64_t matched, injected;
		fault_rule_format(fault_plan_rule(p, i), text, sizeof(text));
		fault_plan_counts(p, i, &matched, &injected);
		json_array_append_new(list, json_pack("{s:s, s:I, s:I}", "rule", text, "matched",
		                                      (json_int_t)matched, "injected",
		                                      (json_int_t)injected));
	}
	return list;
}

/*
 * agent_facts: host facts and metrics from /proc, uname, statvfs and
 * getifaddrs (HostFacts at Enroll/Authenticate, CollectInventory, telemetry
 * collectors). The parsers take text so they can be tested on fixed input;
 * agent_facts_collect does the reading.
 */
#ifndef AGENT_FACTS_H
#define AGENT_FACTS_H

#include <aegis/v1/common.pb-c.h>

#include <stddef.h>
#include <stdint.h>

/* Interface addresses reported (a host with more is unusual; the rest are
 * dropped rather than growing the Authenticate message without bound). */
#define AGENT_FACTS_MAX_ADDRS 32u
#define AGENT_FACTS_ADDR_LEN 46u /* INET6_ADDRSTRLEN */

struct agent_facts {
    char hostname[256];
    char os_version[128]; /* "debian 12" */
    char kernel[128];
    char arch[64];
    uint32_t cpu_count;
    uint64_t mem_total;     /* bytes */
    uint64_t mem_available; /* bytes */
    double load[3];
    double uptime_s;
    int64_t boot_time_unix_ns;
    size_t naddrs;
    char addrs[AGENT_FACTS_MAX_ADDRS][AGENT_FACTS_ADDR_LEN];
    char ifnames[AGENT_FACTS_MAX_ADDRS][32];
};

/* agent_facts_parse_meminfo reads MemTotal and MemAvailable (kB) into
 * bytes. 0 or AEGIS_ERR_MALFORMED if MemTotal is missing. */
int agent_facts_parse_meminfo(const char *text, uint64_t *ptotal, uint64_t *pavail);

/* agent_facts_parse_os_release builds "ID VERSION_ID" ("debian 12"),
 * quotes removed; falls back to PRETTY_NAME, then "linux". Always 0. */
int agent_facts_parse_os_release(const char *text, char *out, size_t len);

/* agent_facts_parse_loadavg: the three load averages. AEGIS_ERR_MALFORMED. */
int agent_facts_parse_loadavg(const char *text, double load[3]);

/* agent_facts_parse_uptime: seconds since boot. AEGIS_ERR_MALFORMED. */
int agent_facts_parse_uptime(const char *text, double *pup);

/* agent_facts_collect fills *f from the running system (root_prefix "" or
 * a test directory holding proc/ and etc/os-release). Fields it cannot read
 * stay zero/empty; never fails. */
void agent_facts_collect(struct agent_facts *f, const char *root_prefix, int64_t now_unix_ns);

/* agent_facts_to_pb points hf's fields at f's strings (f must outlive hf);
 * addrs is caller storage for the address pointer array. */
void agent_facts_to_pb(const struct agent_facts *f, const char *host_id,
                       char *addrs[AGENT_FACTS_MAX_ADDRS], Aegis__V1__HostFacts *hf);

/* agent_json_str appends s as a JSON string literal (quoted, escaped) to
 * buf at *ppos (capacity cap; output is cut but stays NUL-terminated). */
void agent_json_str(char *buf, size_t cap, size_t *ppos, const char *s);
/* agent_json_raw appends printf-formatted raw text. */
void agent_json_raw(char *buf, size_t cap, size_t *ppos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif

#include "agent_facts.h"
#include "agent_io.h"

#include <aegis/err.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

/* /proc files and os-release are a few KiB. */
#define FACT_FILE_MAX 16384u

static int meminfo_field(const char *text, const char *name, uint64_t *pv)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
            char *end = NULL;
            unsigned long long v = strtoull(p + nl + 1, &end, 10);
            if (end == p + nl + 1)
                return AEGIS_ERR_MALFORMED;
            *pv = (uint64_t)v * 1024u;
            return 0;
        }
    }
    return AEGIS_ERR_NOT_FOUND;
}

int agent_facts_parse_meminfo(const char *text, uint64_t *ptotal, uint64_t *pavail)
{
    uint64_t total = 0, avail = 0;
    if (text == NULL || meminfo_field(text, "MemTotal", &total) != 0)
        return AEGIS_ERR_MALFORMED;
    if (meminfo_field(text, "MemAvailable", &avail) != 0 &&
        meminfo_field(text, "MemFree", &avail) != 0)
        avail = 0;
    *ptotal = total;
    *pavail = avail;
    return 0;
}

/* Copies the value of KEY=value (unquoted) into out; 1 if found. */
static int osr_field(const char *text, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) != 0 || p[kl] != '=')
            continue;
        const char *v = p + kl + 1;
        const char *e = strchr(v, '\n');
        size_t n = e ? (size_t)(e - v) : strlen(v);
        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
            v++;
            n -= 2;
        }
        if (n >= len)
            n = len - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return n > 0;
    }
    return 0;
}

int agent_facts_parse_os_release(const char *text, char *out, size_t len)
{
    char id[64] = "", ver[64] = "";
    if (text && osr_field(text, "ID", id, sizeof(id))) {
        if (osr_field(text, "VERSION_ID", ver, sizeof(ver)))
            snprintf(out, len, "%s %s", id, ver);
        else
            snprintf(out, len, "%s", id);
        return 0;
    }
    if (text && osr_field(text, "PRETTY_NAME", out, len))
        return 0;
    snprintf(out, len, "linux");
    return 0;
}

int agent_facts_parse_loadavg(const char *text, double load[3])
{
    if (text == NULL || sscanf(text, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
        return AEGIS_ERR_MALFORMED;
    return 0;
}

int agent_facts_parse_uptime(const char *text, double *pup)
{
    if (text == NULL || sscanf(text, "%lf", pup) != 1 || *pup < 0)
        return AEGIS_ERR_MALFORMED;
    return 0;
}

static int read_text(const char *root, const char *rel, char *buf, size_t cap)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s", root, rel);
    size_t n = 0;
    int rv = agent_io_read_file(NULL, path, buf, cap - 1, &n);
    if (rv != 0) {
        buf[0] = '\0';
        return rv;
    }
    buf[n] = '\0';
    return 0;
}

void agent_facts_collect(struct agent_facts *f, const char *root, int64_t now_unix_ns)
{
    memset(f, 0, sizeof(*f));
    if (root == NULL)
        root = "";
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(f->hostname, sizeof(f->hostname), "%.*s", (int)sizeof(f->hostname) - 1,
                 u.nodename);
        snprintf(f->kernel, sizeof(f->kernel), "%.*s", (int)sizeof(f->kernel) - 1, u.release);
        snprintf(f->arch, sizeof(f->arch), "%.*s", (int)sizeof(f->arch) - 1, u.machine);
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    f->cpu_count = ncpu > 0 ? (uint32_t)ncpu : 0;
    char *buf = malloc(FACT_FILE_MAX);
    if (buf == NULL)
        return;
    if (read_text(root, "/proc/meminfo", buf, FACT_FILE_MAX) == 0)
        agent_facts_parse_meminfo(buf, &f->mem_total, &f->mem_available);
    if (read_text(root, "/etc/os-release", buf, FACT_FILE_MAX) != 0)
        read_text(root, "/usr/lib/os-release", buf, FACT_FILE_MAX);
    agent_facts_parse_os_release(buf, f->os_version, sizeof(f->os_version));
    if (read_text(root, "/proc/loadavg", buf, FACT_FILE_MAX) == 0)
        agent_facts_parse_loadavg(buf, f->load);
    if (read_text(root, "/proc/uptime", buf, FACT_FILE_MAX) == 0 &&
        agent_facts_parse_uptime(buf, &f->uptime_s) == 0)
        f->boot_time_unix_ns = now_unix_ns - (int64_t)(f->uptime_s * 1e9);
    free(buf);
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) != 0)
        return;
    for (struct ifaddrs *i = ifa; i && f->naddrs < AGENT_FACTS_MAX_ADDRS; i = i->ifa_next) {
        if (i->ifa_addr == NULL || (i->ifa_flags & IFF_LOOPBACK))
            continue;
        const void *a = NULL;
        int fam = i->ifa_addr->sa_family;
        if (fam == AF_INET)
            a = &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr;
        else if (fam == AF_INET6)
            a = &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr;
        else
            continue;
        if (inet_ntop(fam, a, f->addrs[f->naddrs], AGENT_FACTS_ADDR_LEN) == NULL)
            continue;
        snprintf(f->ifnames[f->naddrs], sizeof(f->ifnames[0]), "%s", i->ifa_name);
        f->naddrs++;
    }
    freeifaddrs(ifa);
}

void agent_facts_to_pb(const struct agent_facts *f, const char *host_id,
                       char *addrs[AGENT_FACTS_MAX_ADDRS], Aegis__V1__HostFacts *hf)
{
    aegis__v1__host_facts__init(hf);
    hf->host_id = (char *)host_id;
    hf->hostname = (char *)f->hostname;
    hf->os = "linux";
    hf->os_version = (char *)f->os_version;
    hf->kernel_release = (char *)f->kernel;
    hf->arch = (char *)f->arch;
    for (size_t i = 0; i < f->naddrs; i++)
        addrs[i] = (char *)f->addrs[i];
    hf->n_ip_addresses = f->naddrs;
    hf->ip_addresses = addrs;
    hf->cpu_count = f->cpu_count;
    hf->memory_bytes = f->mem_total;
    hf->boot_time_unix_ns = f->boot_time_unix_ns;
}

void agent_json_raw(char *buf, size_t cap, size_t *ppos, const char *fmt, ...)
{
    if (*ppos >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *ppos, cap - *ppos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *ppos = *ppos + (size_t)n < cap ? *ppos + (size_t)n : cap - 1;
}

void agent_json_str(char *buf, size_t cap, size_t *ppos, const char *s)
{
    agent_json_raw(buf, cap, ppos, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            agent_json_raw(buf, cap, ppos, "\\%c", *p);
        else if (*p < 0x20)
            agent_json_raw(buf, cap, ppos, "\\u%04x", *p);
        else
            agent_json_raw(buf, cap, ppos, "%c", *p);
    }
    agent_json_raw(buf, cap, ppos, "\"");
}

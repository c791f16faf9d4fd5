/*
 * aegisctl telemetry query|tail.
 */
#include "ctl_cli.h"

#include <aegis/v1/operator.pb-c.h>

#include <stdlib.h>
#include <string.h>

enum { SUB_QUERY, SUB_TAIL };
enum { Q_AGENT, Q_KIND, Q_METRIC, Q_SINCE, Q_LIMIT };

static const struct ctl_optspec query_opts[] = {
    [Q_AGENT] = {"agent", 1, "ID", "only this agent (repeatable)"},
    [Q_KIND] = {"kind", 1, "KIND", "only events of this kind (repeatable)"},
    [Q_METRIC] = {"metric", 1, "NAME", "only metrics with this name (repeatable)"},
    [Q_SINCE] = {"since", 1, "DURATION", "only the last DURATION (default 1h)"},
    [Q_LIMIT] = {"limit", 1, "N", "show at most N records (default 1000)"},
    {NULL, 0, NULL, NULL},
};
/* tail takes the same filters (the first three ids) without time and limit */
static const struct ctl_optspec tail_opts[] = {
    [Q_AGENT] = {"agent", 1, "ID", "only this agent (repeatable)"},
    [Q_KIND] = {"kind", 1, "KIND", "only events of this kind (repeatable)"},
    [Q_METRIC] = {"metric", 1, "NAME", "only metrics with this name (repeatable)"},
    {NULL, 0, NULL, NULL},
};

static int run_query(struct ctl_cli *cli, const struct ctl_args *a);
static int run_tail(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_QUERY] = {"query", "query [--agent ID] [--since 1h] [--kind K] [--metric M] [--limit N]",
                   "Query stored telemetry, oldest first.",
                   "Columns: TIME, AGENT, TYPE, NAME, VALUE (events: their attributes).",
                   query_opts, 0, 0, run_query},
    [SUB_TAIL] = {"tail", "tail [--agent ID] [--kind K] [--metric M]",
                  "Follow telemetry as it arrives (^C to stop).",
                  "One line per record; with --json one JSON object per line.", tail_opts, 0, 0,
                  run_tail},
};

const struct ctl_family ctl_family_telemetry = {"telemetry", "Query and follow agent telemetry.",
                                                subs, sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_telemetry, &subs[s], __VA_ARGS__)

#define DEFAULT_SINCE_NS (3600ull * 1000000000ull)
#define DEFAULT_LIMIT 1000u

/* Collects repeated option values into a borrowed array. */
static size_t collect(const struct ctl_args *a, int id, char **out, size_t max)
{
    size_t n = 0;
    for (; n < max && n < ctl_args_count(a, id); n++)
        out[n] = (char *)ctl_args_nth(a, id, n);
    return n;
}

/* Names of one sort (agents, event kinds, metrics) a filter carries at most: a bound on the
 * request; 64 quoted agent ids still fit the server's 4 KiB of filter text. */
#define MAX_FILTER_NAMES 64u

struct filter_names {
    char *agents[MAX_FILTER_NAMES], *kinds[MAX_FILTER_NAMES], *metrics[MAX_FILTER_NAMES];
};

/* filter_from_args fills f from --agent, --kind and --metric (names borrowed into n). */
static int filter_from_args(struct ctl_cli *cli, const struct ctl_args *a, int sub,
                            Aegis__V1__TelemetryFilter *f, struct filter_names *n)
{
    if (ctl_args_count(a, Q_AGENT) > MAX_FILTER_NAMES ||
        ctl_args_count(a, Q_KIND) > MAX_FILTER_NAMES ||
        ctl_args_count(a, Q_METRIC) > MAX_FILTER_NAMES)
        return USAGE(sub, "at most %u of each of --agent, --kind, --metric", MAX_FILTER_NAMES);
    f->n_agent_ids = collect(a, Q_AGENT, n->agents, MAX_FILTER_NAMES);
    f->agent_ids = n->agents;
    f->n_event_kinds = collect(a, Q_KIND, n->kinds, MAX_FILTER_NAMES);
    f->event_kinds = n->kinds;
    f->n_metric_names = collect(a, Q_METRIC, n->metrics, MAX_FILTER_NAMES);
    f->metric_names = n->metrics;
    /* Asking for event kinds only means no metrics, and vice versa. */
    f->no_metrics = f->n_event_kinds > 0 && f->n_metric_names == 0;
    f->no_events = f->n_metric_names > 0 && f->n_event_kinds == 0;
    return 0;
}

static void record_cells(const Aegis__V1__TelemetryRecord *r, char *tm, size_t tmlen, char *val,
                         size_t vallen, const char **type, const char **name)
{
    int64_t when = r->received_unix_ns;
    val[0] = '\0';
    *type = "-";
    *name = "";
    if (r->item_case == AEGIS__V1__TELEMETRY_RECORD__ITEM_EVENT && r->event) {
        const Aegis__V1__Event *e = r->event;
        *type = "event";
        *name = e->kind;
        when = e->time_unix_ns ? e->time_unix_ns : when;
        size_t off = 0;
        for (size_t i = 0; i < e->n_attrs && off < vallen; i++)
            off += (size_t)snprintf(val + off, vallen - off, "%s%s=%s", i ? " " : "",
                                    e->attrs[i]->key, e->attrs[i]->value);
    } else if (r->item_case == AEGIS__V1__TELEMETRY_RECORD__ITEM_METRIC && r->metric) {
        const Aegis__V1__Metric *m = r->metric;
        *type = "metric";
        *name = m->name;
        when = m->time_unix_ns ? m->time_unix_ns : when;
        char labels[256];
        ctl_fmt_labels(m->labels ? &m->labels->base : NULL, labels, sizeof(labels));
        snprintf(val, vallen, "%g%s%s%s", m->value, labels[0] ? " {" : "", labels,
                 labels[0] ? "}" : "");
    }
    ctl_fmt_time(when, tm, tmlen);
}

static void telemetry_row(struct ctl_table *t, const ProtobufCMessage *item, void *arg)
{
    (void)arg;
    char tm[32], val[512];
    const char *type, *name;
    const Aegis__V1__TelemetryRecord *r = (const Aegis__V1__TelemetryRecord *)item;
    record_cells(r, tm, sizeof(tm), val, sizeof(val), &type, &name);
    const char *row[] = {tm, r->agent_id, type, name, val};
    ctl_table_add(t, row);
}

static int run_query(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__QueryTelemetryRequest req = AEGIS__V1__QUERY_TELEMETRY_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    Aegis__V1__TelemetryFilter f = AEGIS__V1__TELEMETRY_FILTER__INIT;
    Aegis__V1__TimeRange tr = AEGIS__V1__TIME_RANGE__INIT;
    struct filter_names names;
    req.page = &page;
    req.filter = &f;
    req.time = &tr;
    const char *v;
    uint32_t limit = DEFAULT_LIMIT;
    if ((v = ctl_args_get(a, Q_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_QUERY, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    uint64_t since = DEFAULT_SINCE_NS, now = cli->wallclock();
    if ((v = ctl_args_get(a, Q_SINCE)) && (ctl_parse_duration(v, &since) != 0 || since == 0))
        return USAGE(SUB_QUERY, "bad --since \"%s\" (a duration such as 90s, 1h, 7d)", v);
    tr.from_unix_ns = since < now ? (int64_t)(now - since) : 1;
    int rv = filter_from_args(cli, a, SUB_QUERY, &f, &names);
    if (rv != 0)
        return rv;
    static const char *const hdr[] = {"TIME", "AGENT", "TYPE", "NAME", "VALUE"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(5, hdr);
    rv = ctl_list(cli, CTL_OPS_PATH("QueryTelemetry"), &req.base, &page,
                  &aegis__v1__query_telemetry_response__descriptor, "records", limit, t,
                  telemetry_row, NULL);
    ctl_table_del(t);
    return rv;
}

static int on_record(ProtobufCMessage *m, void *arg)
{
    struct ctl_cli *cli = arg;
    const Aegis__V1__TelemetryRecord *r = (const Aegis__V1__TelemetryRecord *)m;
    if (cli->json) {
        ctl_json_print(cli->out, ctl_pb_to_json(m), 1);
        return 0;
    }
    char tm[32], val[512];
    const char *type, *name;
    record_cells(r, tm, sizeof(tm), val, sizeof(val), &type, &name);
    fprintf(cli->out, "%s  %s  %s  %s  %s\n", tm, r->agent_id, type, name, val);
    fflush(cli->out);
    return 0;
}

static int run_tail(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__TailTelemetryRequest req = AEGIS__V1__TAIL_TELEMETRY_REQUEST__INIT;
    Aegis__V1__TelemetryFilter f = AEGIS__V1__TELEMETRY_FILTER__INIT;
    struct filter_names names;
    req.filter = &f;
    int rv = filter_from_args(cli, a, SUB_TAIL, &f, &names);
    if (rv != 0)
        return rv;
    rv = ctl_call_stream(cli, CTL_OPS_PATH("TailTelemetry"), &req.base,
                         &aegis__v1__telemetry_record__descriptor, on_record, cli);
    return rv == CTL_EXIT_INTERRUPTED ? CTL_EXIT_OK : rv;
}

/*
 * aegis-agent: enroll | run | status | update-check | version.
 */
#include "agent_daemon.h"
#include "agent_version.h"

#include <aegis/err.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(int rc)
{
    fprintf(rc ? stderr : stdout,
            "usage:\n"
            "  aegis-agent enroll --server HOST:PORT --pin sha256//... --token TOKEN\n"
            "                     [--state-dir DIR] [--machine-id-file F] [--force]\n"
            "  aegis-agent run [--state-dir DIR] [--iface IF]... [--machine-id-file F]\n"
            "                  [--bpf-pin-dir DIR] [--update-deadline SECONDS]\n"
            "                  [--log-level error|warn|info|debug]\n"
            "  aegis-agent status [--state-dir DIR] [--json]\n"
            "  aegis-agent update-check [--state-dir DIR] [--max-starts N]\n"
            "      (run from the previous binary before each service start while a\n"
            "       self-update is on trial; rolls back a build that keeps failing)\n"
            "  aegis-agent version\n"
            "default state dir: " AGENT_DEFAULT_STATE_DIR "\n");
    return rc;
}

/* Returns the value of option `name` at argv[*i] (advancing *i), or NULL. */
static const char *opt(int argc, char **argv, int *i, const char *name)
{
    if (strcmp(argv[*i], name) != 0)
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "aegis-agent: %s needs a value\n", name);
        exit(2);
    }
    return argv[++*i];
}

/* uint_opt parses a whole number in 1..max for option `name` of subcommand `cmd`; on bad
 * input it says what the option wants and returns -1. */
static int uint_opt(const char *cmd, const char *name, const char *v, unsigned long max,
                    const char *unit, unsigned *out)
{
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n == 0 || n > max) {
        fprintf(stderr, "aegis-agent %s: %s wants 1..%lu%s\n", cmd, name, max, unit);
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(2);
    const char *cmd = argv[1];
    const char *v;
    enum aegis_log_level level = AEGIS_LOG_INFO;
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("aegis-agent %s\n", agent_version_string());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0)
        return usage(0);
    if (strcmp(cmd, "enroll") == 0) {
        struct agent_enroll_opts o = {.state_dir = AGENT_DEFAULT_STATE_DIR, .log_level = level};
        for (int i = 2; i < argc; i++) {
            if ((v = opt(argc, argv, &i, "--server")))
                o.server = v;
            else if ((v = opt(argc, argv, &i, "--pin")))
                o.pin = v;
            else if ((v = opt(argc, argv, &i, "--token")))
                o.token = v;
            else if ((v = opt(argc, argv, &i, "--state-dir")))
                o.state_dir = v;
            else if ((v = opt(argc, argv, &i, "--machine-id-file")))
                o.machine_id_file = v;
            else if (strcmp(argv[i], "--force") == 0)
                o.force = 1;
            else
                return fprintf(stderr, "aegis-agent enroll: unknown option %s\n", argv[i]),
                       usage(2);
        }
        return agent_enroll(&o);
    }
    if (strcmp(cmd, "run") == 0) {
        static struct agent_opts o;
        o.state_dir = AGENT_DEFAULT_STATE_DIR;
        o.log_level = level;
        o.argv = argv;
        for (int i = 2; i < argc; i++) {
            if ((v = opt(argc, argv, &i, "--state-dir")))
                o.state_dir = v;
            else if ((v = opt(argc, argv, &i, "--machine-id-file")))
                o.machine_id_file = v;
            else if ((v = opt(argc, argv, &i, "--bpf-pin-dir")))
                o.bpf_pin_dir = v;
            else if ((v = opt(argc, argv, &i, "--update-deadline"))) {
                if (uint_opt("run", "--update-deadline", v, 3600, " seconds",
                             &o.update_deadline_s) != 0)
                    return 2;
            } else if ((v = opt(argc, argv, &i, "--iface"))) {
                if (o.nifaces == AGENT_MAX_IFACES) {
                    fprintf(stderr, "aegis-agent run: at most %d --iface\n", AGENT_MAX_IFACES);
                    return 2;
                }
                o.ifaces[o.nifaces++] = v;
            } else if ((v = opt(argc, argv, &i, "--log-level"))) {
                if (aegis_log_level_parse(v, &o.log_level) != 0) {
                    fprintf(stderr, "aegis-agent run: bad --log-level %s\n", v);
                    return 2;
                }
            } else
                return fprintf(stderr, "aegis-agent run: unknown option %s\n", argv[i]), usage(2);
        }
        return agent_run(&o);
    }
    if (strcmp(cmd, "status") == 0) {
        const char *dir = AGENT_DEFAULT_STATE_DIR;
        int json = 0;
        for (int i = 2; i < argc; i++) {
            if ((v = opt(argc, argv, &i, "--state-dir")))
                dir = v;
            else if (strcmp(argv[i], "--json") == 0)
                json = 1;
            else
                return fprintf(stderr, "aegis-agent status: unknown option %s\n", argv[i]),
                       usage(2);
        }
        return agent_status_print(dir, json);
    }
    if (strcmp(cmd, "update-check") == 0) {
        const char *dir = AGENT_DEFAULT_STATE_DIR;
        unsigned max_starts = AGENT_UPDATE_MAX_STARTS;
        for (int i = 2; i < argc; i++) {
            if ((v = opt(argc, argv, &i, "--state-dir")))
                dir = v;
            else if ((v = opt(argc, argv, &i, "--max-starts"))) {
                if (uint_opt("update-check", "--max-starts", v, 100, "", &max_starts) != 0)
                    return 2;
            } else
                return fprintf(stderr, "aegis-agent update-check: unknown option %s\n", argv[i]),
                       usage(2);
        }
        return agent_update_check(dir, max_starts);
    }
    fprintf(stderr, "aegis-agent: unknown command %s\n", cmd);
    return usage(2);
}

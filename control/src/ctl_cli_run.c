/*
 * aegisctl: the command table, --help at every level, and dispatch.
 */
#include "ctl_cli.h"

#include <aegis/tstamp.h>

#include <stdlib.h>
#include <string.h>

static const struct ctl_family *const families[] = {
    &ctl_family_agents,   &ctl_family_tokens,    &ctl_family_commands, &ctl_family_artifacts,
    &ctl_family_policies, &ctl_family_telemetry, &ctl_family_audit,
};
#define NFAMILIES (sizeof(families) / sizeof(families[0]))

static const char global_help[] =
    "Global options (accepted anywhere on the line):\n"
    "  --server HOST:PORT   aegis-control address (env AEGIS_SERVER; default port 4433)\n"
    "  --pin sha256//...    server key pin, one or two comma-separated (env AEGIS_PIN)\n"
    "  --cert FILE          operator certificate PEM (env AEGIS_CERT)\n"
    "  --key FILE           operator private key PEM (env AEGIS_KEY)\n"
    "  --config FILE        config file (env AEGISCTL_CONFIG; default\n"
    "                       ~/.config/aegis/aegisctl.conf: `key = value` lines for server,\n"
    "                       pin, cert, key, signing_key). Flags beat environment beats file.\n"
    "  --timeout DURATION   deadline of each call (default 30s) and of connecting\n"
    "                       (default 10s)\n"
    "  --json               print one JSON document (streams: one JSON object per line);\n"
    "                       keys are the protocol's field names, enums lower-case names,\n"
    "                       digests hex, times *_unix_ns integers\n"
    "  --no-progress        no progress bars\n"
    "  --help, -h           help for any command\n"
    "\n"
    "Exit codes: 0 ok; 1 the server said no or the call failed; 2 bad command line;\n"
    "3 cannot connect or the server key does not match the pin; 4 invalid local input\n"
    "(file, JSON, key, config); 130 interrupted.\n";

static void print_top_help(FILE *f)
{
    fprintf(f, "usage: aegisctl [global options] COMMAND SUBCOMMAND [options]\n\n"
               "Operate an Aegis fleet through aegis-control.\n\nCommands:\n");
    for (size_t i = 0; i < NFAMILIES; i++)
        fprintf(f, "  %-10s  %s\n", families[i]->name, families[i]->summary);
    fprintf(f, "\n%s\nRun `aegisctl COMMAND --help` for its sub-commands.\n", global_help);
}

static void print_family_help(FILE *f, const struct ctl_family *fam)
{
    fprintf(f, "usage: aegisctl %s SUBCOMMAND [options]\n\n%s\n\nSubcommands:\n", fam->name,
            fam->summary);
    for (size_t i = 0; i < fam->nsubs; i++)
        fprintf(f, "  %-10s  %s\n", fam->subs[i].name, fam->subs[i].summary);
    fprintf(f, "\nRun `aegisctl %s SUBCOMMAND --help` for details.\n", fam->name);
}

static void print_sub_help(FILE *f, const struct ctl_family *fam, const struct ctl_subcmd *sub)
{
    fprintf(f, "usage: aegisctl %s %s\n\n%s\n", fam->name, sub->synopsis, sub->summary);
    if (sub->details)
        fprintf(f, "\n%s\n", sub->details);
    if (sub->opts && sub->opts[0].name) {
        fprintf(f, "\nOptions:\n");
        for (size_t i = 0; sub->opts[i].name; i++) {
            char left[64];
            snprintf(left, sizeof(left), "--%s%s%s", sub->opts[i].name,
                     sub->opts[i].has_arg ? " " : "",
                     sub->opts[i].has_arg ? sub->opts[i].arg_name : "");
            fprintf(f, "  %-22s %s\n", left, sub->opts[i].help);
        }
    }
    fprintf(f, "\n%s", global_help);
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

void ctl_cli_init(struct ctl_cli *cli)
{
    memset(cli, 0, sizeof(*cli));
    cli->out = stdout;
    cli->err = stderr;
    cli->getenv_fn = env_get;
    cli->wallclock = aegis_wallclock;
    cli->timeout_ns = CTL_DEFAULT_TIMEOUT_NS;
}

void ctl_cli_free(struct ctl_cli *cli)
{
    if (cli->own_ops && cli->ops && cli->ops->del)
        cli->ops->del(cli->ops_ud);
    if (cli->own_ops) {
        cli->ops = NULL;
        cli->ops_ud = NULL;
        cli->own_ops = 0;
    }
    ctl_config_free(&cli->flags);
    ctl_config_free(&cli->cfg);
    free(cli->config_file);
    cli->config_file = NULL;
    cli->cfg_resolved = 0;
}

int ctl_cli_config(struct ctl_cli *cli, const struct ctl_config **pcfg)
{
    if (!cli->cfg_resolved) {
        char err[512];
        int rv = ctl_config_resolve(&cli->flags, cli->getenv_fn, cli->config_file, &cli->cfg, err,
                                    sizeof(err));
        if (rv != 0) {
            fprintf(cli->err, "aegisctl: %s\n", err);
            return rv;
        }
        cli->cfg_resolved = 1;
    }
    *pcfg = &cli->cfg;
    return 0;
}

int ctl_cli_run(struct ctl_cli *cli, int argc, char **argv)
{
    /* Global options before the command: parse them with no sub-command. */
    int i = 1;
    struct ctl_args a;
    while (i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0) {
        /* a global option and, if it takes one, its value */
        int take = 1;
        const char *o = argv[i];
        if (!strchr(o, '=') &&
            (strcmp(o, "--server") == 0 || strcmp(o, "--pin") == 0 || strcmp(o, "--cert") == 0 ||
             strcmp(o, "--key") == 0 || strcmp(o, "--config") == 0 || strcmp(o, "--timeout") == 0))
            take = 2;
        if (i + take > argc)
            take = argc - i;
        int rv = ctl_args_parse(cli, NULL, NULL, take, argv + i, &a);
        if (rv != 0)
            return rv;
        if (a.help) {
            print_top_help(cli->out);
            return CTL_EXIT_OK;
        }
        if (a.npos) /* cannot happen: the slice starts with an option */
            break;
        i += take;
    }
    if (i >= argc) {
        print_top_help(cli->err);
        return CTL_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        print_top_help(cli->out);
        return CTL_EXIT_OK;
    }
    const struct ctl_family *fam = NULL;
    for (size_t k = 0; k < NFAMILIES; k++) {
        if (strcmp(families[k]->name, argv[i]) == 0)
            fam = families[k];
    }
    if (!fam)
        return ctl_usage(cli, NULL, NULL, "unknown command \"%s\"", argv[i]);
    i++;
    if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
        strcmp(argv[i], "help") == 0) {
        print_family_help(i >= argc ? cli->err : cli->out, fam);
        return i >= argc ? CTL_EXIT_USAGE : CTL_EXIT_OK;
    }
    const struct ctl_subcmd *sub = NULL;
    for (size_t k = 0; k < fam->nsubs; k++) {
        if (strcmp(fam->subs[k].name, argv[i]) == 0)
            sub = &fam->subs[k];
    }
    if (!sub)
        return ctl_usage(cli, fam, NULL, "unknown %s sub-command \"%s\"", fam->name, argv[i]);
    i++;
    int rv = ctl_args_parse(cli, fam, sub, argc - i, argv + i, &a);
    if (rv != 0)
        return rv;
    if (a.help) {
        print_sub_help(cli->out, fam, sub);
        return CTL_EXIT_OK;
    }
    return sub->run(cli, &a);
}

/*
 * aegisctl entry point: real streams and environment, then ctl_cli_run.
 */
#include "ctl_cli.h"

#include <signal.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    /* A closed pipe (aegisctl ... | head) must end us quietly, not kill us
     * mid-write with a confusing status: writes then fail with EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    struct ctl_cli cli;
    ctl_cli_init(&cli);
    cli.progress_tty = isatty(STDERR_FILENO);
    int rv = ctl_cli_run(&cli, argc, argv);
    ctl_cli_free(&cli);
    if (fflush(stdout) != 0 && rv == CTL_EXIT_OK)
        rv = CTL_EXIT_SERVER;
    return rv;
}

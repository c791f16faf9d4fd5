/*
 * aegisctl configuration precedence: flags > environment > config file, per
 * setting; relative paths in the file; errors that name file and line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static const char *envv[8][2];
static size_t nenv;

static const char *tgetenv(const char *name)
{
    for (size_t i = 0; i < nenv; i++) {
        if (strcmp(envv[i][0], name) == 0)
            return envv[i][1];
    }
    return NULL;
}

static void setenv_t(const char *k, const char *v)
{
    envv[nenv][0] = k;
    envv[nenv][1] = v;
    nenv++;
}

static char *write_conf(const char *name, const char *text)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int setup(void **state)
{
    (void)state;
    if (fake_tmpdir(dir, "config") != 0)
        return -1;
    nenv = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return fake_rmtree(dir);
}

static void test_precedence(void **state)
{
    (void)state;
    char *conf = write_conf("a.conf", "# operator settings\n"
                                      "server = file.example:5000\n"
                                      "pin = sha256//FILE\n"
                                      "\n"
                                      "cert = certs/op.pem   # relative to the file\n"
                                      "key = /abs/op.key\n"
                                      "signing_key = ~/artifact.key\n");
    setenv_t("HOME", "/home/op");
    setenv_t("AEGIS_PIN", "sha256//ENV");
    setenv_t("AEGIS_KEY", "env.key");
    struct ctl_config flags = {0};
    flags.server = strdup("flag.example");
    flags.key = strdup("flag.key");
    struct ctl_config out;
    char err[256];
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, conf, &out, err, sizeof(err)), 0);
    /* flag beats env and file; a port is added when missing */
    assert_string_equal(out.server, "flag.example:4433");
    /* env beats file */
    assert_string_equal(out.pin, "sha256//ENV");
    /* flag beats env */
    assert_string_equal(out.key, "flag.key");
    /* file only: relative to the file's directory, ~ from HOME */
    char want[128];
    snprintf(want, sizeof(want), "%s/certs/op.pem", dir);
    assert_string_equal(out.cert, want);
    assert_string_equal(out.signing_key, "/home/op/artifact.key");
    ctl_config_free(&out);
    ctl_config_free(&flags);

    /* no flags, no env: everything from the file named by AEGISCTL_CONFIG */
    nenv = 0;
    setenv_t("AEGISCTL_CONFIG", conf);
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, NULL, &out, err, sizeof(err)), 0);
    assert_string_equal(out.server, "file.example:5000");
    assert_string_equal(out.pin, "sha256//FILE");
    assert_string_equal(out.key, "/abs/op.key");
    ctl_config_free(&out);
    free(conf);
}

static void test_default_file_and_ports(void **state)
{
    (void)state;
    /* $HOME/.config/aegis/aegisctl.conf is read when nothing names a file */
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/.config", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(sub, sizeof(sub), "%s/.config/aegis", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    free(write_conf(".config/aegis/aegisctl.conf", "server=[::1]\n"));
    setenv_t("HOME", dir);
    struct ctl_config flags = {0}, out;
    char err[256];
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, NULL, &out, err, sizeof(err)), 0);
    assert_string_equal(out.server, "[::1]:4433");
    assert_null(out.pin);
    ctl_config_free(&out);
    /* a missing default file is fine */
    nenv = 0;
    setenv_t("HOME", "/nonexistent-home");
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, NULL, &out, err, sizeof(err)), 0);
    assert_null(out.server);
    ctl_config_free(&out);
    /* ports are kept; IPv6 with port too */
    flags.server = strdup("[2001:db8::1]:99");
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, NULL, &out, err, sizeof(err)), 0);
    assert_string_equal(out.server, "[2001:db8::1]:99");
    ctl_config_free(&out);
    ctl_config_free(&flags);
}

static void test_errors(void **state)
{
    (void)state;
    struct ctl_config flags = {0}, out;
    char err[256];
    char *conf = write_conf("bad.conf", "server = a:1\n\nsevrer = b:2\n");
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, conf, &out, err, sizeof(err)),
                     CTL_EXIT_INPUT);
    char want[128];
    snprintf(want, sizeof(want), "%s:3: unknown key \"sevrer\"", conf);
    assert_non_null(strstr(err, want));
    free(conf);
    conf = write_conf("bad2.conf", "just words\n");
    assert_int_equal(ctl_config_resolve(&flags, tgetenv, conf, &out, err, sizeof(err)),
                     CTL_EXIT_INPUT);
    assert_non_null(strstr(err, ":1: expected \"key = value\""));
    free(conf);
    /* a named file that does not exist is an error (a default one is not) */
    assert_int_equal(
        ctl_config_resolve(&flags, tgetenv, "/nonexistent/x.conf", &out, err, sizeof(err)),
        CTL_EXIT_INPUT);
    assert_non_null(strstr(err, "cannot read config file /nonexistent/x.conf"));

    /* through the CLI: a broken --config is exit 4 before any call */
    struct fake f;
    fake_init(&f);
    conf = write_conf("bad3.conf", "pin\n");
    assert_int_equal(fake_run(&f, "--config", conf, "artifacts", "upload", "/dev/null", "--name",
                              "n", "--kind", "file", NULL),
                     CTL_EXIT_INPUT);
    assert_non_null(strstr(f.err, "expected \"key = value\""));
    assert_int_equal(f.ncalls, 0);
    free(conf);
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_file_and_ports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

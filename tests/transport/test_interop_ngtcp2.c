/*
 * Interop: ngtcp2's own example client (bookworm-backports ngtcp2-client,
 * gtlsclient: ngtcp2 + GnuTLS, a stack nobody here wrote) completes an
 * HTTP/3 exchange with our server, presenting a client certificate.
 * Skips (77) when gtlsclient is not installed. Credentials are made at test
 * time in a temporary directory that is removed afterwards.
 */
#include "tnet.h"
#include "tsvc.h"

#include <aegis/err.h>
#include <aegis/transport_ev.h>

#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GTLSCLIENT "/usr/bin/gtlsclient"
#define GTLSSERVER "/usr/sbin/gtlsserver"
#define CHILD_TIMEOUT_NS (15 * AEGIS_NS_PER_S)

static int write_file(const char *dir, const char *name, const void *data, size_t len, char *out)
{
    snprintf(out, 512, "%s/%s", dir, name);
    FILE *f = fopen(out, "we");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    chmod(out, 0600);
    return w == len ? 0 : -1;
}

static void tick(struct ev_loop *l, ev_timer *w, int r)
{
    (void)l;
    (void)w;
    (void)r;
}

static int cond_settled(void *arg)
{
    struct tcli *c = arg;
    return c->established || c->closed;
}

/* Our client against gtlsserver --verify-client: pinned handshake with a
 * client certificate, then one request (gtlsserver is a file server, so
 * the answer is HTTP 404 -> UNIMPLEMENTED by gRPC's HTTP status mapping). */
static int our_client_vs_gtlsserver(struct tpki *pki, const char *dir)
{
    char certp[512], keyp[512], outp[512];
    if (write_file(dir, "server.pem", pki->server.cert, strlen(pki->server.cert), certp) ||
        write_file(dir, "server.key", pki->server.key, strlen(pki->server.key), keyp))
        return 0;
    snprintf(outp, sizeof(outp), "%s/server-out.txt", dir);
    /* a free UDP port: bind an ephemeral one, note it, release it */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer t;
    ev_timer_init(&t, tick, 0.02, 0.02);
    ev_timer_start(loop, &t);
    struct tfx f;
    tfx_config(&f, pki, &pki->client);
    struct aegis_ev *probe = NULL;
    f.scfg.is_server = 1;
    if (aegis_ev_new(loop, &f.scfg, "127.0.0.1:0", &probe) != 0)
        return 0;
    char port[16];
    snprintf(port, sizeof(port), "%u", aegis_ev_port(probe));
    aegis_ev_del(probe);
    fflush(stdout);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* killed with the test process even when it aborts */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        FILE *o = freopen(outp, "w", stdout);
        (void)o;
        dup2(fileno(stdout), 2);
        char *argv[] = {
            GTLSSERVER, "--verify-client", "-d", (char *)dir, "127.0.0.1", port, keyp, certp, NULL};
        execv(GTLSSERVER, argv);
        _exit(127);
    }
    /* wait (bounded) until the server's socket exists, by retrying the
     * handshake: each attempt is one connection with its own deadline */
    struct aegis_ev *cli = NULL;
    int ok = aegis_ev_new(loop, &f.ccfg, "127.0.0.1:0", &cli) == 0;
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%s", port);
    struct aegis_conn *conn = NULL;
    aegis_tstamp end = aegis_now() + CHILD_TIMEOUT_NS;
    while (ok && !f.cli.established && aegis_now() < end) {
        f.cli.closed = 0;
        if (aegis_ev_connect(cli, target, "localhost", &conn) != 0)
            break;
        aegis_tstamp step = aegis_now() + 2 * AEGIS_NS_PER_S;
        while (!cond_settled(&f.cli) && aegis_now() < step)
            ev_run(loop, EVRUN_ONCE);
        if (!f.cli.established && !f.cli.closed)
            aegis_conn_close(conn, 0x100, "retry");
        for (int i = 0; i < 10 && !f.cli.established; i++)
            ev_run(loop, EVRUN_NOWAIT);
    }
    struct tres r = {0};
    if (f.cli.established && aegis_call_start(conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                              &tres_callbacks, &r, &r.call) == 0) {
        aegis_call_send(r.call, (const uint8_t *)"x", 1);
        aegis_call_close_send(r.call);
        aegis_tstamp e2 = aegis_now() + 5 * AEGIS_NS_PER_S;
        while (!r.done && aegis_now() < e2)
            ev_run(loop, EVRUN_ONCE);
    }
    kill(pid, SIGTERM);
    int status;
    aegis_tstamp e3 = aegis_now() + 5 * AEGIS_NS_PER_S;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (aegis_now() > e3) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    int pass = f.cli.established && f.cli.peer.chains_to_ca && r.done &&
               r.status == AEGIS_GRPC_UNIMPLEMENTED;
    if (!pass)
        fprintf(stderr,
                "FAIL: our client vs gtlsserver: established=%d pinned=%d done=%d status=%d "
                "msg=%s\n",
                f.cli.established, f.cli.peer.chains_to_ca, r.done, r.status, r.message);
    else
        printf("interop ok: our client completed a pinned mTLS handshake and a request against "
               "gtlsserver (%s)\n",
               r.message);
    aegis_ev_del(cli);
    ev_timer_stop(loop, &t);
    ev_loop_destroy(loop);
    unlink(certp);
    unlink(keyp);
    unlink(outp);
    return pass;
}

int main(void)
{
    if (access(GTLSCLIENT, X_OK) != 0) {
        printf("SKIP: %s not installed (Debian package ngtcp2-client)\n", GTLSCLIENT);
        return 77;
    }
    struct tpki pki;
    tpki_make(&pki);
    char dir[] = "/tmp/aegis-interop-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char certp[512], keyp[512], bodyp[512], outp[512];
    /* one gRPC message: 5-byte prefix + "hello" */
    static const uint8_t body[] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
    if (write_file(dir, "client.pem", pki.client.cert, strlen(pki.client.cert), certp) ||
        write_file(dir, "client.key", pki.client.key, strlen(pki.client.key), keyp) ||
        write_file(dir, "body", body, sizeof(body), bodyp)) {
        fprintf(stderr, "cannot write test files in %s\n", dir);
        return 1;
    }
    snprintf(outp, sizeof(outp), "%s/out.txt", dir);

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer t;
    ev_timer_init(&t, tick, 0.02, 0.02);
    ev_timer_start(loop, &t);
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.scfg.is_server = 1;
    struct aegis_ev *srv = NULL;
    int rv = aegis_ev_new(loop, &f.scfg, "127.0.0.1:0", &srv);
    if (rv) {
        fprintf(stderr, "server: %s\n", aegis_strerror(rv));
        return 1;
    }
    char port[16];
    snprintf(port, sizeof(port), "%u", aegis_ev_port(srv));

    fflush(stdout);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* killed with the test process even when it aborts */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        FILE *o = freopen(outp, "w", stdout);
        (void)o;
        dup2(fileno(stdout), 2);
        char *argv[] = {GTLSCLIENT,
                        "--exit-on-all-streams-close",
                        "--handshake-timeout=5s",
                        "--timeout=5s",
                        "--key",
                        keyp,
                        "--cert",
                        certp,
                        "-m",
                        "POST",
                        "-d",
                        bodyp,
                        "127.0.0.1",
                        port,
                        "https://localhost/test.Echo/Unary",
                        NULL};
        execv(GTLSCLIENT, argv);
        _exit(127);
    }
    int status = 0, exited = 0;
    aegis_tstamp end = aegis_now() + CHILD_TIMEOUT_NS;
    while (aegis_now() < end) {
        ev_run(loop, EVRUN_ONCE);
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            exited = 1;
            break;
        }
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    /* let the server see the close */
    for (int i = 0; i < 20; i++)
        ev_run(loop, EVRUN_NOWAIT);

    char out[65536] = "";
    FILE *o = fopen(outp, "re");
    if (o) {
        size_t n = fread(out, 1, sizeof(out) - 1, o);
        out[n] = 0;
        fclose(o);
    }
    int ok = 1;
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "FAIL: gtlsclient did not exit cleanly (exited=%d status=%d)\n", exited,
                status);
        ok = 0;
    }
    if (f.svc.handshakes != 1 || strcmp(f.svc.last_peer.subject_cn, "agent-1") != 0 ||
        !f.svc.last_peer.chains_to_ca) {
        fprintf(stderr, "FAIL: server did not see gtlsclient's certificate (handshakes=%d)\n",
                f.svc.handshakes);
        ok = 0;
    }
    /* gtlsclient prints the response fields it received */
    if (!strstr(out, ":status: 200") || !strstr(out, "grpc-status")) {
        fprintf(stderr, "FAIL: no HTTP/3 response seen by gtlsclient\n");
        ok = 0;
    }
    if (!ok)
        fprintf(stderr, "--- gtlsclient output (tail) ---\n%s\n",
                strlen(out) > 3000 ? out + strlen(out) - 3000 : out);
    else
        printf("interop ok: gtlsclient completed an HTTP/3 request with a client certificate\n");
    aegis_ev_del(srv);
    ev_timer_stop(loop, &t);
    ev_loop_destroy(loop);
    unlink(certp);
    unlink(keyp);
    unlink(bodyp);
    unlink(outp);
    if (access(GTLSSERVER, X_OK) == 0) {
        if (!our_client_vs_gtlsserver(&pki, dir))
            ok = 0;
    } else {
        printf("note: %s not installed (Debian package ngtcp2-server from bookworm-backports): "
               "client direction not tested\n",
               GTLSSERVER);
    }
    rmdir(dir);
    tpki_free(&pki);
    return ok ? 0 : 1;
}

/*
 * Fuzz target: datagrams from the network into a server endpoint.
 *
 * Input: one mode byte, then datagrams as [u16 big-endian length][bytes].
 *   mode 0: the datagrams arrive at a fresh server (demux, Initial parsing,
 *           Retry tokens, version negotiation, stateless resets, ngtcp2's
 *           Initial decryption).
 *   mode 1: a real client first completes a handshake and one RPC with the
 *           server over the in-memory network; then the datagrams arrive on
 *           the client's path (an established connection's packet handling).
 * Packet protection keeps the bytes from reaching HTTP/3 and gRPC parsing;
 * those decoders have their own targets (fuzz_grpc_*).
 */
#include "../transport/tnet.h"
#include "../transport/tsvc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tpki pki;
static int pki_ready;

static int done_cond(void *arg)
{
    return ((struct tres *)arg)->done;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!pki_ready) {
        tpki_make(&pki);
        pki_ready = 1;
    }
    int mode = data[0] & 1;
    data++;
    size--;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 1);
    struct aegis_path path = {
        .local = f.net.cli_path.remote,
        .local_len = f.net.cli_path.remote_len,
        .remote = f.net.cli_path.local,
        .remote_len = f.net.cli_path.local_len,
    };
    if (mode == 1) {
        if (!tfx_connect(&f, 5 * AEGIS_NS_PER_S))
            abort(); /* the in-memory handshake must work */
        struct tres r = {0};
        if (aegis_call_start(f.conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL, &tres_callbacks, &r,
                             &r.call) == 0) {
            aegis_call_send(r.call, (const uint8_t *)"x", 1);
            aegis_call_close_send(r.call);
            tnet_run(&f.net, 2 * AEGIS_NS_PER_S, done_cond, &r);
        }
    }
    uint8_t out[1500];
    struct aegis_path op;
    size_t seg;
    /* bounded by the input: at most one datagram per two bytes */
    while (size >= 2) {
        size_t len = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (len > size)
            len = size;
        if (len > 1500)
            len = 1500;
        aegis_endpoint_recv(f.net.srv, &path, data, len, f.net.now);
        data += len;
        size -= len;
        for (int i = 0; i < 64 && aegis_endpoint_send(f.net.srv, out, sizeof(out), 1, &op, &seg,
                                                      f.net.now) > 0;
             i++)
            ;
        f.net.now += AEGIS_NS_PER_MS;
        aegis_endpoint_handle_expiry(f.net.srv, f.net.now);
    }
    f.net.drop_all = 1;
    tnet_free(&f.net);
    return 0;
}

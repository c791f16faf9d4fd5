# aegis-bench-flood: a QUIC handshake flood (real client Initials from many ports, never
# finished; --follow-retry answers a Retry once). Used by the fleet bench's flood scenario and
# tests/fleet/test_handshake_flood. It talks to ngtcp2 and wolfSSL directly: it is a hostile
# test client, not part of the transport library.
aegis_program(aegis-bench-flood ${CMAKE_CURRENT_LIST_DIR}/bench_flood.c)
target_link_libraries(aegis-bench-flood PRIVATE aegis_dep_ngtcp2_crypto aegis_dep_ngtcp2
                      aegis_dep_wolfssl aegis_base)

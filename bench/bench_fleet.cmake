# aegis-bench-fleet: N simulated agents (real QUIC connections, one identity each) against a
# real aegis-control and PostgreSQL; scenarios connect, idle, fanout, telemetry, artifact,
# restart, enroll (bench/README.md). Performance is printed, never asserted.
if(TARGET aegis_proto AND TARGET aegis_transport AND TARGET aegis_pki)
  aegis_program(aegis-bench-fleet
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_main.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_agent.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_oper.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_db.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_ident.c)
  target_link_libraries(aegis-bench-fleet PRIVATE aegis_transport aegis_proto aegis_pki
                        aegis_base aegis_dep_libev PkgConfig::LIBPQ)

  # Smoke test (label integration;db): 20 agents, connect + fan-out against the real daemon;
  # fails unless every agent authenticated and every ack is durable in PostgreSQL.
  if(TARGET aegis-control AND TARGET aegis-certs AND TARGET aegisctl)
    if(NOT COMMAND aegis_pg_add_test)
      include(${CMAKE_SOURCE_DIR}/tests/support/pgtmp.cmake)
    endif()
    aegis_pg_add_test(NAME test_bench_fleet_smoke
      COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/fleet_run.sh
              --bench $<TARGET_FILE:aegis-bench-fleet> --control $<TARGET_FILE:aegis-control>
              --certs $<TARGET_FILE:aegis-certs> --aegisctl $<TARGET_FILE:aegisctl>
              --n 20 --scenario connect,fanout -- --check --timeout 30
      LABELS bench
      TIMEOUT 90)
  endif()
endif()

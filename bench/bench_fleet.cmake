# The simulated fleet (issue 7): N agents in one process, each a real QUIC connection with its
# own identity, against a real aegis-control and PostgreSQL (bench/README.md).
#   aegis_bench_fleet_lib  the simulated agents, their identities and the enrolling COPY
#                          (bench_fleet_agent.c, bench_fleet_ident.c, bench_fleet_db.c)
#   aegis-bench-fleet      starts its own aegis-control; scenarios connect, idle, fanout,
#                          telemetry, artifact, restart, enroll; performance printed, never asserted
#   aegis-fleet-sim        runs against an EXTERNAL aegis-control for the fault and soak suites
#                          (tests/fleet/, bench/soak.sh): counts every command's effects per agent
if(TARGET aegis_proto AND TARGET aegis_transport AND TARGET aegis_pki)
  add_library(aegis_bench_fleet_lib STATIC
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_agent.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_db.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_ident.c)
  target_include_directories(aegis_bench_fleet_lib PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_compile_options(aegis_bench_fleet_lib PRIVATE ${AEGIS_WARNINGS})
  target_link_libraries(aegis_bench_fleet_lib PUBLIC aegis_transport aegis_proto aegis_pki
                        aegis_base aegis_dep_libev PkgConfig::LIBPQ)

  aegis_program(aegis-bench-fleet
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_main.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_fleet_oper.c
    ${CMAKE_CURRENT_LIST_DIR}/bench_proc.c)
  target_link_libraries(aegis-bench-fleet PRIVATE aegis_bench_fleet_lib)

  aegis_program(aegis-fleet-sim ${CMAKE_CURRENT_LIST_DIR}/fleet_sim.c)
  target_link_libraries(aegis-fleet-sim PRIVATE aegis_bench_fleet_lib)

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

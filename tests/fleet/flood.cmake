# Handshake flood and scale-out tests, included by tests/fleet/CMakeLists.txt.
#   test_handshake_flood       N = 50 authenticated agents keep receiving commands while
#                              aegis-bench-flood holds the server's handshake slots
#                              (labels faults;integration;db)
#   test_bench_scaleout_smoke  two aegis-control instances on one database, 40 agents split
#                              across them, one SendCommand through instance A: B's agents get
#                              it through LISTEN/NOTIFY (labels integration;db;bench)
if(TARGET aegis-bench-fleet AND TARGET aegis-bench-flood AND TARGET aegis-control
   AND TARGET aegis-certs AND TARGET aegisctl)
  if(NOT COMMAND aegis_pg_add_test)
    include(${CMAKE_SOURCE_DIR}/tests/support/pgtmp.cmake)
  endif()
  aegis_pg_add_test(NAME test_handshake_flood
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_handshake_flood.sh
            $<TARGET_FILE:aegis-bench-fleet> $<TARGET_FILE:aegis-control>
            $<TARGET_FILE:aegis-certs> $<TARGET_FILE:aegisctl> $<TARGET_FILE:aegis-bench-flood>
    LABELS faults
    TIMEOUT 240)
  aegis_pg_add_test(NAME test_bench_scaleout_smoke
    COMMAND bash ${CMAKE_SOURCE_DIR}/bench/fleet_run.sh
            --bench $<TARGET_FILE:aegis-bench-fleet> --control $<TARGET_FILE:aegis-control>
            --certs $<TARGET_FILE:aegis-certs> --aegisctl $<TARGET_FILE:aegisctl>
            --n 40 --scenario connect,scaleout -- --check --timeout 30
    LABELS bench
    TIMEOUT 90)
endif()

# Throwaway PostgreSQL for ctest (include this file, then use the functions below).
#
# Each test gets its own server from tests/support/pgtmp.sh: started in a temp directory on
# a private Unix socket before the test, stopped by PID and deleted after it, so tests can run
# in parallel and may restart their server. The test sees AEGIS_TEST_PG_DSN (and
# AEGIS_TEST_PGTMP / AEGIS_TEST_PGTMP_DIR to stop or restart it: `$AEGIS_TEST_PGTMP restart
# $AEGIS_TEST_PGTMP_DIR`). Without PostgreSQL 15 the test is skipped (status 77).
set(AEGIS_PGTMP_SH ${CMAKE_CURRENT_LIST_DIR}/pgtmp.sh CACHE INTERNAL "pgtmp.sh path")

# aegis_pg_add_test(NAME name COMMAND cmd args... [LABELS ...] [TIMEOUT s]): run an existing
# command (for example the real daemon plus a client) against its own PostgreSQL.
function(aegis_pg_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  if(T_TIMEOUT LESS 60)
    message(FATAL_ERROR "aegis_pg_add_test(${T_NAME}): TIMEOUT ${T_TIMEOUT} is too short; a "
                        "server start/stop alone may take 30 s, use 60 or more")
  endif()
  add_test(NAME ${T_NAME} COMMAND bash ${AEGIS_PGTMP_SH} run -- ${T_COMMAND})
  # pgtmp.sh stops the test itself a little before ctest would, so it can still stop the
  # server; ctest's kill would orphan it.
  math(EXPR inner "${T_TIMEOUT} - 20")
  set_tests_properties(${T_NAME} PROPERTIES LABELS "integration;db;${T_LABELS}"
                       SKIP_RETURN_CODE 77 TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "PGTMP_TEST_TIMEOUT=${inner}")
endfunction()

# aegis_pg_test(NAME SOURCES ... LIBS ... [LABELS ...] [TIMEOUT s]): a cmocka test program
# built here and run against its own PostgreSQL.
function(aegis_pg_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_compile_options(${name} PRIVATE ${AEGIS_WARNINGS})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  aegis_pg_add_test(NAME ${name} COMMAND $<TARGET_FILE:${name}> LABELS ${T_LABELS}
                    TIMEOUT ${T_TIMEOUT})
endfunction()

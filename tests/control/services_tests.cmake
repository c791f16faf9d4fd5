# aegis-control daemon tests (included from tests/control/CMakeLists.txt): the real daemon
# binary against a throwaway PostgreSQL (tests/support/pgtmp), driven by a C client over the
# transport (ctl_svc_harness.c) acting as agents and operators. Labels integration;db.
if(TARGET aegis-control)
  foreach(t enroll cmd data dbrestart batch)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_ctl_svc_${t}.c)
      aegis_pg_test(test_ctl_svc_${t}
        SOURCES test_ctl_svc_${t}.c ctl_svc_harness.c ctl_test_util.c
        LIBS ctl_services ctl_core aegis_transport aegis_pki aegis_proto aegis_dep_libev
             aegis_dep_wolfssl Threads::Threads
        TIMEOUT 100)
      target_compile_definitions(test_ctl_svc_${t} PRIVATE
        CTL_TEST_DAEMON="$<TARGET_FILE:aegis-control>")
      add_dependencies(test_ctl_svc_${t} aegis-control)
    endif()
  endforeach()
endif()

# The per-loop-turn statement batches (ctl_batch.c) against a real PostgreSQL.
if(TARGET ctl_services)
  aegis_pg_test(test_ctl_batch SOURCES test_ctl_batch.c ctl_test_util.c
                LIBS ctl_services ctl_core TIMEOUT 120)
endif()

# Pure helpers of the daemon (no database).
if(TARGET ctl_services)
  aegis_unit_test(test_ctl_artcache SOURCES test_ctl_artcache.c LIBS ctl_services)
  aegis_unit_test(test_ctl_svc_util SOURCES test_ctl_svc_util.c LIBS ctl_services)
  # Operator-supplied selectors are parsed by the daemon: fuzzed, corpus replayed under ctest.
  aegis_fuzz_target(fuzz_ctl_selector SOURCE ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_ctl_selector.c
                    LIBS ctl_services
                    CORPUS ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/fuzz_ctl_selector)
endif()

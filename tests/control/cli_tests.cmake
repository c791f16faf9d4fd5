# aegisctl tests (included from tests/control/CMakeLists.txt). Unit tests run
# every command in-process against a scripted fake RPC layer (ctl_cli_fake.c);
# test_ctl_cli_rpc drives the real client transport against an in-process
# aegis_transport server on loopback.
if(TARGET ctl_kind)
  aegis_unit_test(test_ctl_kind SOURCES test_ctl_kind.c LIBS ctl_kind aegis_proto)
endif()
if(TARGET ctl_cli)
  set(CTL_CLI_TEST_LIBS ctl_cli aegis_pki aegis_proto aegis_transport PkgConfig::JSONC PkgConfig::ZSTD)
  foreach(t args config out crypto agents tokens commands artifacts policies telemetry audit)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_ctl_cli_${t}.c)
      aegis_unit_test(test_ctl_cli_${t}
        SOURCES test_ctl_cli_${t}.c ctl_cli_fake.c
        LIBS ${CTL_CLI_TEST_LIBS})
    endif()
  endforeach()
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_ctl_cli_rpc.c)
    aegis_unit_test(test_ctl_cli_rpc
      SOURCES test_ctl_cli_rpc.c ctl_cli_fake.c
      LIBS ${CTL_CLI_TEST_LIBS} aegis_dep_libev Threads::Threads)
  endif()
endif()

# aegisctl against the real aegis-control on a throwaway PostgreSQL (labels
# integration;db): the script starts the daemon, drives every command family
# through aegisctl and checks tables, --json and exit codes; with aegis-agent
# built, an agent enrolls so that agent rows, commands and the agent-cert
# PERMISSION_DENIED are checked too.
if(TARGET aegisctl AND TARGET aegis-control AND TARGET aegis-certs)
  aegis_pg_add_test(NAME test_ctl_cli_integration
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_ctl_cli_integration.sh
            $<TARGET_FILE:aegisctl> $<TARGET_FILE:aegis-control> $<TARGET_FILE:aegis-certs>
            ${CMAKE_CURRENT_SOURCE_DIR}/ctl_cli_policy.json
            $<$<TARGET_EXISTS:aegis-agent>:$<TARGET_FILE:aegis-agent>>
    TIMEOUT 240)
endif()

# The paging of every OperatorService list (ctl_page_reply in ctl_svc_oper*.c) against the real
# daemon on a throwaway PostgreSQL (labels integration;db).
if(TARGET aegis-control AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_ctl_svc_oper.c)
  aegis_pg_test(test_ctl_svc_oper
    SOURCES test_ctl_svc_oper.c ctl_svc_harness.c ctl_test_util.c
    LIBS ctl_services ctl_core aegis_transport aegis_pki aegis_proto aegis_dep_libev
         aegis_dep_wolfssl Threads::Threads
    TIMEOUT 100)
  target_compile_definitions(test_ctl_svc_oper PRIVATE
    CTL_TEST_DAEMON="$<TARGET_FILE:aegis-control>")
  add_dependencies(test_ctl_svc_oper aegis-control)
endif()

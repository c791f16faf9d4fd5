# aegisctl tests (included from tests/control/CMakeLists.txt). Unit tests run
# every command in-process against a scripted fake RPC layer (ctl_cli_fake.c);
# test_ctl_cli_rpc drives the real client transport against an in-process
# aegis_transport server on loopback.
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

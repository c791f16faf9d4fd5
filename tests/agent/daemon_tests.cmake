# Tests of the aegis-agent daemon (agent/daemon.cmake).
add_library(agentd_test_keys STATIC agentd_test_keys.c)
target_compile_options(agentd_test_keys PRIVATE ${AEGIS_WARNINGS})
target_include_directories(agentd_test_keys PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(agentd_test_keys PUBLIC agent_pure aegis_pki)

foreach(t version cmd artifact facts)
  aegis_unit_test(test_agent_daemon_${t} SOURCES test_agent_daemon_${t}.c
    LIBS agentd_test_keys agent_test_util agent_pure PkgConfig::ZSTD)
endforeach()

# End to end: the real aegis-agent process against an in-process fake
# AgentService (agentd_fake.c) on loopback. Newer builds of the agent
# (versions 99.0.0 and 100.0.0) drive the self-update and rollback paths.
agent_add_executable(aegis-agent-test-next 99.0.0)
agent_add_executable(aegis-agent-test-next2 100.0.0)
set_target_properties(aegis-agent-test-next aegis-agent-test-next2 PROPERTIES
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_executable(test_agent_daemon_e2e test_agent_daemon_e2e.c agentd_fake.c)
target_compile_options(test_agent_daemon_e2e PRIVATE ${AEGIS_WARNINGS})
target_compile_definitions(test_agent_daemon_e2e PRIVATE
  AGENT_BIN="$<TARGET_FILE:aegis-agent>"
  AGENT_NEXT_BIN="$<TARGET_FILE:aegis-agent-test-next>"
  AGENT_NEXT2_BIN="$<TARGET_FILE:aegis-agent-test-next2>")
target_link_libraries(test_agent_daemon_e2e PRIVATE agentd_test_keys agent_test_util agent_pure
  aegis_transport aegis_pki aegis_dep_libev PkgConfig::ZSTD PkgConfig::CMOCKA)
set_target_properties(test_agent_daemon_e2e PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_dependencies(test_agent_daemon_e2e aegis-agent aegis-agent-test-next aegis-agent-test-next2)
add_test(NAME test_agent_daemon_e2e COMMAND test_agent_daemon_e2e)
set_tests_properties(test_agent_daemon_e2e PROPERTIES LABELS "integration" TIMEOUT 600)

# End to end with the real aegis-control, aegisctl and a throwaway PostgreSQL
# (tests/support/pgtmp.sh; exit 77 = skipped when PostgreSQL is absent).
if(TARGET aegis-control AND TARGET aegisctl AND TARGET aegis-certs)
  add_test(NAME test_agent_daemon_control
    COMMAND ${CMAKE_SOURCE_DIR}/tests/support/pgtmp.sh run --
            ${CMAKE_CURRENT_SOURCE_DIR}/test_agent_daemon_control.sh
            $<TARGET_FILE:aegis-agent> $<TARGET_FILE:aegis-control> $<TARGET_FILE:aegisctl>
            $<TARGET_FILE:aegis-certs>)
  set_tests_properties(test_agent_daemon_control PROPERTIES
    LABELS "integration" TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()

# The agent in a network namespace of its own against the real control
# server (tests/agent/test_agent_netns.sh): inbound NEW connections dropped by
# nftables, policy push/enforce/counters/rollback through aegisctl, 20 % loss,
# a 20 s partition, an address change without re-authentication. Needs root
# (namespaces, nftables, BPF); exit 77 = skipped, with the reason printed.
if(TARGET aegis-control AND TARGET aegisctl AND TARGET aegis-certs AND TARGET aegis-bpf-probe)
  add_test(NAME test_agent_netns
    COMMAND ${CMAKE_SOURCE_DIR}/tests/support/pgtmp.sh run --
            ${CMAKE_CURRENT_SOURCE_DIR}/test_agent_netns.sh
            $<TARGET_FILE:aegis-agent> $<TARGET_FILE:aegis-control> $<TARGET_FILE:aegisctl>
            $<TARGET_FILE:aegis-certs> $<TARGET_FILE:aegis-bpf-probe>)
  set_tests_properties(test_agent_netns PROPERTIES
    LABELS "integration;netns;db" TIMEOUT 420 SKIP_RETURN_CODE 77)
endif()

# Self-update through the real aegis-control, aegisctl and PostgreSQL
# (tests/agent/test_agent_update_control.sh): 0.1.0 -> 99.0.0 signed build,
# downgrade refused, tampered signature/content refused, a build the control
# refuses rolled back after the deadline. Exit 77 = skipped (no PostgreSQL).
if(TARGET aegis-control AND TARGET aegisctl AND TARGET aegis-certs)
  add_test(NAME test_agent_update_control
    COMMAND ${CMAKE_SOURCE_DIR}/tests/support/pgtmp.sh run --
            ${CMAKE_CURRENT_SOURCE_DIR}/test_agent_update_control.sh
            $<TARGET_FILE:aegis-agent> $<TARGET_FILE:aegis-agent-test-next>
            $<TARGET_FILE:aegis-agent-test-next2> $<TARGET_FILE:aegis-control>
            $<TARGET_FILE:aegisctl> $<TARGET_FILE:aegis-certs>)
  set_tests_properties(test_agent_update_control PROPERTIES
    LABELS "integration;db" TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()

# Footprint of the shipped aegis-agent: prints the stripped size as one
# machine-readable line, fails over the 4 MB budget or on a shared dependency
# other than libc (skipped, 77, when the build does not link it statically).
if(AEGIS_AGENT_STATIC AND NOT AEGIS_SANITIZE AND NOT AEGIS_FUZZ)
  set(agent_size_static ON)
else()
  set(agent_size_static OFF)
endif()
add_test(NAME test_agent_size
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_agent_size.sh $<TARGET_FILE:aegis-agent>
          ${agent_size_static})
set_tests_properties(test_agent_size PROPERTIES LABELS "footprint" TIMEOUT 60 SKIP_RETURN_CODE 77)

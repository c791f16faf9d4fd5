# aegis-agent, the daemon (agent_daemon: everything but main and the version
# string, so tests link it; each executable compiles agent_build_version.c
# with its own AEGIS_AGENT_VERSION).
set(AGENT_DAEMON_DIR ${CMAKE_CURRENT_SOURCE_DIR}/src CACHE INTERNAL "agent daemon sources")

# Pure pieces (no transport, no BPF): unit-tested on their own.
add_library(agent_pure STATIC
  src/agent_crypto.c
  src/agent_version.c
  src/agent_msg.c
  src/agent_cmd.c
  src/agent_artifact.c
  src/agent_unzstd.c
  src/agent_facts.c
  src/agent_ident.c)
target_compile_options(agent_pure PRIVATE ${AEGIS_WARNINGS})
target_include_directories(agent_pure PUBLIC ${AGENT_DAEMON_DIR})
target_link_libraries(agent_pure PUBLIC agent_core aegis_proto aegis_base
  PRIVATE aegis_pki aegis_dep_wolfssl PkgConfig::ZSTD)

add_library(agent_daemon STATIC
  src/agent_run.c
  src/agent_exec.c
  src/agent_fetch.c
  src/agent_policy.c
  src/agent_telemetry.c
  src/agent_update.c
  src/agent_status.c
  src/agent_enroll.c)
target_compile_options(agent_daemon PRIVATE ${AEGIS_WARNINGS})
target_link_libraries(agent_daemon PUBLIC agent_pure aegis_transport aegis_pki aegis_bpf
  aegis_policy_pb aegis_dep_libev)

# Footprint (budget: 4 MB stripped): one section per function and object so
# the executable's --gc-sections drops what nothing calls. Only the agent's own
# libraries; the shared project libraries keep their flags.
foreach(t agent_core agent_pure agent_daemon)
  target_compile_options(${t} PRIVATE -ffunction-sections -fdata-sections)
endforeach()

# agent_add_executable(NAME VERSION): the daemon built as VERSION.
function(agent_add_executable name version)
  add_executable(${name} ${AGENT_DAEMON_DIR}/agent_main.c ${AGENT_DAEMON_DIR}/agent_build_version.c)
  target_compile_options(${name} PRIVATE ${AEGIS_WARNINGS})
  target_compile_definitions(${name} PRIVATE AEGIS_AGENT_VERSION="${version}")
  target_link_libraries(${name} PRIVATE agent_daemon)
endfunction()

agent_add_executable(aegis-agent ${PROJECT_VERSION})

# Static linking of the remaining shared dependencies (the agent ships as one
# file to hosts that may not have them). Whole-archive because the archives
# must win over the shared libraries the imported targets name; --as-needed
# then drops the unused DT_NEEDED entries. libc stays dynamic (NSS, and
# glibc's static linking caveats).
option(AEGIS_AGENT_STATIC "link aegis-agent's third-party libraries statically" ON)
if(AEGIS_AGENT_STATIC AND NOT AEGIS_SANITIZE AND NOT AEGIS_FUZZ)
  set(agent_static_libs "")
  # (libzstd.a comes in through aegis_libbpf: see below.)
  foreach(lib ev protobuf-c nghttp3)
    find_library(AGENT_STATIC_${lib} NAMES lib${lib}.a)
    if(AGENT_STATIC_${lib})
      list(APPEND agent_static_libs "$<LINK_LIBRARY:WHOLE_ARCHIVE,${AGENT_STATIC_${lib}}>")
    endif()
  endforeach()
  target_link_libraries(aegis-agent PRIVATE ${agent_static_libs})
  target_link_options(aegis-agent PRIVATE -Wl,--as-needed -Wl,--gc-sections)
  # aegis_libbpf names libzstd.a, but after the libzstd.so that agent_pure and
  # aegis_transport bring, so the shared one would win; CMake refuses the same
  # archive with and without WHOLE_ARCHIVE, so it goes in as a link option
  # (before every library). libelf pulls in zstd's compressor anyway, so the
  # whole archive costs little.
  find_library(AGENT_STATIC_zstd NAMES libzstd.a)
  if(AGENT_STATIC_zstd)
    target_link_options(aegis-agent PRIVATE
      "SHELL:-Wl,--push-state,--whole-archive ${AGENT_STATIC_zstd} -Wl,--pop-state")
  endif()
endif()

# aegisctl, the operator CLI (included from control/CMakeLists.txt).

# The artifact kind names, one table for aegisctl and the OperatorService
# handlers in ctl_services (services.cmake, included before this file).
aegis_library(ctl_kind src/ctl_kind.c)
target_include_directories(ctl_kind PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(ctl_kind PUBLIC aegis_proto PkgConfig::PROTOBUFC)
if(TARGET ctl_services)
  target_link_libraries(ctl_services PUBLIC ctl_kind)
endif()

# ctl_cli is everything but main(), so the unit tests drive every command
# in-process against a fake RPC layer.
aegis_library(ctl_cli
  src/ctl_cli_run.c
  src/ctl_cli_args.c
  src/ctl_cli_config.c
  src/ctl_cli_out.c
  src/ctl_cli_pb.c
  src/ctl_cli_rpc.c
  src/ctl_cli_crypto.c
  src/ctl_cli_zstd.c
  src/ctl_cli_agents.c
  src/ctl_cli_tokens.c
  src/ctl_cli_commands.c
  src/ctl_cli_artifacts.c
  src/ctl_cli_policies.c
  src/ctl_cli_telemetry.c
  src/ctl_cli_audit.c)
target_include_directories(ctl_cli PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(ctl_cli
  PUBLIC aegis_base aegis_proto PkgConfig::PROTOBUFC
  PRIVATE ctl_kind aegis_transport aegis_pki aegis_policy_pb aegis_policy PkgConfig::JSONC
          PkgConfig::ZSTD aegis_dep_libev)

aegis_program(aegisctl src/ctl_cli_main.c)
target_link_libraries(aegisctl PRIVATE ctl_cli)

# aegis-control: the RPC services (library ctl_services, so tests can link the pieces) and the
# daemon. Included by control/CMakeLists.txt.
aegis_library(ctl_services
  src/ctl_util.c
  src/ctl_batch.c
  src/ctl_artcache.c
  src/ctl_server.c
  src/ctl_svc_agent.c
  src/ctl_svc_cmd.c
  src/ctl_svc_data.c
  src/ctl_svc_oper.c
  src/ctl_svc_oper_art.c
  src/ctl_metrics.c)
target_include_directories(ctl_services PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(ctl_services
  PUBLIC ctl_core aegis_transport aegis_pki aegis_proto aegis_policy_pb aegis_base
  PRIVATE aegis_dep_wolfssl PkgConfig::MHD Threads::Threads)

aegis_program(aegis-control src/ctl_main.c)
target_link_libraries(aegis-control PRIVATE ctl_services ctl_core aegis_dep_libev)

install(TARGETS aegis-control RUNTIME DESTINATION sbin)

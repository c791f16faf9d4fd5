# aegis-bench: transport benchmark modes (serve, unary, download, upload,
# connect, fanout). Performance is printed, never asserted.
if(TARGET aegis_proto)
  aegis_program(aegis-bench ${CMAKE_CURRENT_SOURCE_DIR}/bench_transport.c
                ${CMAKE_CURRENT_SOURCE_DIR}/bench_proc.c)
  target_link_libraries(aegis-bench PRIVATE aegis_transport aegis_proto aegis_pki aegis_base
                        aegis_dep_libev)
endif()
# The fleet benchmark (aegis-bench-fleet) lives in its own file.
include(${CMAKE_CURRENT_LIST_DIR}/bench_fleet.cmake OPTIONAL)

/* The version string of one executable; each executable compiles this file
 * with its own AEGIS_AGENT_VERSION (tests build a "newer" agent for the
 * self-update path). */
#include "agent_version.h"

#ifndef AEGIS_AGENT_VERSION
#    error "AEGIS_AGENT_VERSION must be defined by the build"
#endif

const char *agent_version_string(void)
{
    return AEGIS_AGENT_VERSION;
}

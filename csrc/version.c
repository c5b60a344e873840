/* The library's version, from the header CMake generates. */
#include "evograd/evograd.h"
#include "evograd/version.h"

const char *evograd_version(void) { return EVOGRAD_VERSION_STRING; }

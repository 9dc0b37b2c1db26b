// Placeholder: being written.
#include "intra.h"

// Placeholder: filled in by its issue.
#include "addon.h"

namespace mp {

void InitFork(Napi::Env env, Napi::Object exports) {}

}  // namespace mp

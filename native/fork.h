// What other primitives need to know about the fork core.
#pragma once

#include <napi.h>

namespace mp {

// True in a Process child between childDetach() and its bootstrap: the parent's JS stack is
// being unwound by a V8 termination, which native callers of JS see as a pending exception.
// They must drop it silently (it is not an error of the program).
bool ChildIsUnwinding(Napi::Env env);

}  // namespace mp

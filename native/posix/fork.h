// What other primitives need to know about the fork core.
#pragma once

#include <napi.h>

namespace mp {

// True in a Process child between childDetach() and its bootstrap: the parent's JS stack is
// being unwound by a V8 termination, which native callers of JS see as a pending exception.
// They must drop it silently (it is not an error of the program).
bool ChildIsUnwinding(Napi::Env env);

// For native code that called into JS from a loop callback (uv_poll, uv_prepare, ...) and got a
// failure: takes the pending exception and reports it as uncaught, exactly as Node does for its
// own callbacks — unless it is the termination that unwinds a Process child's inherited stack
// (the fork happened inside this very callback), which is dropped. Every loop callback of this
// addon that calls JS must end with this, or a fork taken inside it kills the child.
void ReportCallbackFailure(Napi::Env env);

}  // namespace mp

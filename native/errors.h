// errno -> Node's SystemError shape, in one place.
//
// Node's own OS errors look like
//   Error: ENOENT: no such file or directory, open 'x'  { errno: -2, code: 'ENOENT', syscall: 'open', path: 'x' }
// (errno negative, libuv style). Every native failure in this addon is reported that way, so a
// caller handles `err.code` exactly as it does for `fs`.
#pragma once

#include <napi.h>

#include <string>

namespace mp {

// The last OS error of this thread, as `ErrnoError` takes it: errno on POSIX; on Windows the
// Win32 error translated by libuv (ERROR_FILE_NOT_FOUND -> UV_ENOENT), so that both name it alike.
int LastSystemError();

// Builds the error object (does not throw). `err`: a positive errno or a negative libuv code.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path = nullptr);

// Throws it as a pending JS exception and returns `undefined`, so a binding can
// `return ThrowErrno(env, errno, "shm_open", name);`
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const char* path = nullptr);

// A library error with a stable `code` (ERR_MP_...), for the few checks native code must make itself.
Napi::Value ThrowCode(Napi::Env env, const char* code, const std::string& message, bool typeError = false);

}  // namespace mp

#include "errors.h"

#include <uv.h>
#ifdef _WIN32
#include <windows.h>
#endif

#include <cerrno>
#include <cstring>

#include "addon.h"

namespace mp {

int LastSystemError() {
#ifdef _WIN32
  return uv_translate_sys_error(static_cast<int>(GetLastError()));
#else
  return errno;
#endif
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path) {
  // libuv names and texts every errno the same way Node does (uv_err_name(-ENOENT) == "ENOENT").
  const int uverr = err > 0 ? -err : err;
  const char* name = uv_err_name(uverr);
  const char* text = uv_strerror(uverr);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  // libuv names only the errnos it maps (not ECHILD, EOWNERDEAD, ...): ask libc for the rest.
  if (strncmp(name, "Unknown system error", 20) == 0 && strerrorname_np(-uverr) != nullptr) {
    name = strerrorname_np(-uverr);
    text = strerror(-uverr);
  }
#endif
  std::string msg = std::string(name) + ": " + text + ", " + syscall;
  if (path != nullptr) msg += std::string(" '") + path + "'";
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  o.Set("errno", Napi::Number::New(env, uverr));
  o.Set("code", Napi::String::New(env, name));
  o.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) o.Set("path", Napi::String::New(env, path));
  return e;
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const char* path) {
  ErrnoError(env, err, syscall, path).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowCode(Napi::Env env, const char* code, const std::string& message, bool typeError) {
  Napi::Error e = typeError ? Napi::TypeError::New(env, message) : Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

// errnoError(errno, syscall, path?) -> the same shape, for JS code that gets a raw errno.
static Napi::Value ErrnoErrorJS(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int err = info[0].As<Napi::Number>().Int32Value();
  std::string sys = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : std::string("unknown");
  if (info.Length() > 2 && info[2].IsString()) {
    std::string path = info[2].As<Napi::String>().Utf8Value();
    return ErrnoError(env, err, sys.c_str(), path.c_str()).Value();
  }
  return ErrnoError(env, err, sys.c_str()).Value();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("errnoError", Napi::Function::New(env, ErrnoErrorJS, "errnoError"));
}

}  // namespace mp

// Windows: waiting for and ending a process by pid (the spawn start method's Popen on win32).
// There is no reaping on Windows: any number of handles may wait on a process, so this never
// races libuv's own wait on the ChildProcess it started.
#include <napi.h>

#include "../addon.h"
#include "../errors.h"
#include "handle.h"

namespace mp {

namespace {

// waitProcess(pid, timeoutMs) -> exit code, or null if it is still running after timeoutMs.
Napi::Value WaitProcess(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "waitProcess(pid, timeoutMs)", true);
  DWORD pid = info[0].As<Napi::Number>().Uint32Value();
  UniqueHandle h(::OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid));
  if (!h.Valid()) return ThrowErrno(env, LastSystemError(), "OpenProcess");
  DWORD r = ::WaitForSingleObject(h.Get(), WaitMs(info[1].As<Napi::Number>().DoubleValue()));
  if (r == WAIT_TIMEOUT) return env.Null();
  if (r != WAIT_OBJECT_0) return ThrowErrno(env, LastSystemError(), "WaitForSingleObject");
  DWORD code = 0;
  if (!::GetExitCodeProcess(h.Get(), &code)) return ThrowErrno(env, LastSystemError(), "GetExitCodeProcess");
  return Napi::Number::New(env, static_cast<double>(code));
}

// terminateProcess(pid, exitCode): TerminateProcess (what libuv does for any signal but 0).
Napi::Value TerminateProcessJS(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "terminateProcess(pid, exitCode)", true);
  UniqueHandle h(::OpenProcess(PROCESS_TERMINATE, FALSE, info[0].As<Napi::Number>().Uint32Value()));
  if (!h.Valid()) return ThrowErrno(env, LastSystemError(), "OpenProcess");
  if (!::TerminateProcess(h.Get(), info[1].As<Napi::Number>().Uint32Value())) return ThrowErrno(env, LastSystemError(), "TerminateProcess");
  return env.Undefined();
}

}  // namespace

void InitWait(Napi::Env env, Napi::Object exports) {
  exports.Set("waitProcess", Napi::Function::New(env, WaitProcess, "waitProcess"));
  exports.Set("terminateProcess", Napi::Function::New(env, TerminateProcessJS, "terminateProcess"));
}

}  // namespace mp

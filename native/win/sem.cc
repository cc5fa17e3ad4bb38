// Windows: named semaphores and events (CreateSemaphoreW / CreateEventW), the kernel objects a
// spawn child opens by name. Same JS shape as native/posix/sem.cc's NamedSemaphoreHandle where
// Windows has the operation; getValue does not exist there (ENOSYS). Like file mappings, the
// objects live while a handle is open: semUnlink is a no-op.
#include <napi.h>

#include <uv.h>

#include <climits>
#include <string>

#include "../addon.h"
#include "../errors.h"
#include "handle.h"

namespace mp {

namespace {

class SemHandle : public Napi::ObjectWrap<SemHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NamedSemaphoreHandle",
                       {InstanceMethod("wait", &SemHandle::Wait), InstanceMethod("tryWait", &SemHandle::TryWait),
                        InstanceMethod("post", &SemHandle::Post), InstanceMethod("getValue", &SemHandle::GetValue),
                        InstanceMethod("close", &SemHandle::Close)});
  }

  // new NamedSemaphoreHandle(name, flags, mode, value): flags & 1 creates (O_CREAT in lib/).
  explicit SemHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SemHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsNumber() || !info[3].IsNumber()) {
      ThrowCode(env, "ERR_INVALID_ARG_TYPE", "NamedSemaphoreHandle(name, flags, mode, value)", true);
      return;
    }
    std::wstring name = Wide(info[0].As<Napi::String>().Utf8Value());
    bool create = (info[1].As<Napi::Number>().Int32Value() & 1) != 0;
    LONG value = static_cast<LONG>(info[3].As<Napi::Number>().Uint32Value());
    HANDLE h = create ? ::CreateSemaphoreW(nullptr, value, LONG_MAX, name.c_str())
                      : ::OpenSemaphoreW(SEMAPHORE_ALL_ACCESS, FALSE, name.c_str());
    if (h == nullptr) {
      ThrowErrno(env, LastSystemError(), create ? "CreateSemaphoreW" : "OpenSemaphoreW");
      return;
    }
    sem_.Reset(h);
  }

 private:
  bool Check(Napi::Env env) {
    if (sem_.Valid()) return true;
    ThrowCode(env, "ERR_MP_CLOSED", "the semaphore is closed");
    return false;
  }

  // wait(timeoutMs) -> true, or false on timeout (< 0: forever).
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    double ms = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    DWORD r = ::WaitForSingleObject(sem_.Get(), WaitMs(ms));
    if (r == WAIT_OBJECT_0) return Napi::Boolean::New(env, true);
    if (r == WAIT_TIMEOUT) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, LastSystemError(), "WaitForSingleObject");
  }

  Napi::Value TryWait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    DWORD r = ::WaitForSingleObject(sem_.Get(), 0);
    if (r == WAIT_FAILED) return ThrowErrno(env, LastSystemError(), "WaitForSingleObject");
    return Napi::Boolean::New(env, r == WAIT_OBJECT_0);
  }

  Napi::Value Post(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    if (!::ReleaseSemaphore(sem_.Get(), 1, nullptr)) return ThrowErrno(env, LastSystemError(), "ReleaseSemaphore");
    return env.Undefined();
  }

  Napi::Value GetValue(const Napi::CallbackInfo& info) {
    return ThrowErrno(info.Env(), UV_ENOSYS, "sem_getvalue");
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    sem_.Reset();
    return info.Env().Undefined();
  }

  UniqueHandle sem_;
};

// Named manual- or auto-reset events: new NamedEventHandle(name, create, manualReset, initial).
class EventHandle : public Napi::ObjectWrap<EventHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NamedEventHandle",
                       {InstanceMethod("set", &EventHandle::Set), InstanceMethod("reset", &EventHandle::ResetEvent),
                        InstanceMethod("wait", &EventHandle::Wait), InstanceMethod("close", &EventHandle::Close)});
  }

  explicit EventHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EventHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) {
      ThrowCode(env, "ERR_INVALID_ARG_TYPE", "NamedEventHandle(name, create, manualReset, initial)", true);
      return;
    }
    std::wstring name = Wide(info[0].As<Napi::String>().Utf8Value());
    bool create = info[1].ToBoolean().Value();
    HANDLE h = create ? ::CreateEventW(nullptr, info[2].ToBoolean().Value(), info[3].ToBoolean().Value(), name.c_str())
                      : ::OpenEventW(EVENT_ALL_ACCESS, FALSE, name.c_str());
    if (h == nullptr) {
      ThrowErrno(env, LastSystemError(), create ? "CreateEventW" : "OpenEventW");
      return;
    }
    ev_.Reset(h);
  }

 private:
  bool Check(Napi::Env env) {
    if (ev_.Valid()) return true;
    ThrowCode(env, "ERR_MP_CLOSED", "the event is closed");
    return false;
  }

  Napi::Value Set(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    if (!::SetEvent(ev_.Get())) return ThrowErrno(env, LastSystemError(), "SetEvent");
    return env.Undefined();
  }

  Napi::Value ResetEvent(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    if (!::ResetEvent(ev_.Get())) return ThrowErrno(env, LastSystemError(), "ResetEvent");
    return env.Undefined();
  }

  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    double ms = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    DWORD r = ::WaitForSingleObject(ev_.Get(), WaitMs(ms));
    if (r == WAIT_OBJECT_0) return Napi::Boolean::New(env, true);
    if (r == WAIT_TIMEOUT) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, LastSystemError(), "WaitForSingleObject");
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    ev_.Reset();
    return info.Env().Undefined();
  }

  UniqueHandle ev_;
};

Napi::Value SemUnlink(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

}  // namespace

void InitSem(Napi::Env env, Napi::Object exports) {
  exports.Set("NamedSemaphoreHandle", SemHandle::Define(env));
  exports.Set("NamedEventHandle", EventHandle::Define(env));
  exports.Set("semUnlink", Napi::Function::New(env, SemUnlink, "semUnlink"));
}

}  // namespace mp

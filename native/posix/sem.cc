// Named POSIX semaphores (sem_open family) for `multiproc/posix`.
//
// A handle is a JS object wrapping the sem_t* (SemHandle): close() is idempotent and the
// finalizer closes a handle JS forgot. Blocking waits use sem_timedwait where it exists; macOS has
// none (and no sem_getvalue), so there a timed wait polls sem_trywait every millisecond. The async
// wait of lib/posix.ts polls tryWait from JS timers: no thread is parked per waiter.
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include "../addon.h"
#include "../errors.h"

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

  // new NamedSemaphoreHandle(name, flags, mode, value)
  explicit SemHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SemHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
      ThrowCode(env, "ERR_INVALID_ARG_TYPE", "NamedSemaphoreHandle(name, flags, mode, value)", true);
      return;
    }
    name_ = info[0].As<Napi::String>().Utf8Value();
    int flags = info[1].As<Napi::Number>().Int32Value();
    mode_t mode = static_cast<mode_t>(info[2].As<Napi::Number>().Uint32Value());
    unsigned value = info[3].As<Napi::Number>().Uint32Value();
    sem_t* s = (flags & O_CREAT) ? ::sem_open(name_.c_str(), flags, mode, value) : ::sem_open(name_.c_str(), flags);
    if (s == SEM_FAILED) {
      ThrowErrno(env, errno, "sem_open", name_.c_str());
      return;
    }
    sem_ = s;
  }

  ~SemHandle() override {
    if (sem_ != nullptr) ::sem_close(sem_);
  }

 private:
  bool Check(Napi::Env env) {
    if (sem_ != nullptr) return true;
    ThrowCode(env, "ERR_MP_CLOSED", "the semaphore is closed");
    return false;
  }

  // wait(timeoutMs) -> true (decremented) or false (timed out). timeoutMs < 0: no limit.
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    double ms = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    int r;
    if (ms < 0) {
      do r = ::sem_wait(sem_);
      while (r < 0 && errno == EINTR);
    } else {
#if defined(__APPLE__)
      // No sem_timedwait: poll (obviously correct; the blocking form only).
      for (double waited = 0;; waited += 1) {
        r = ::sem_trywait(sem_);
        if (r == 0 || errno != EAGAIN) break;
        if (waited >= ms) {
          errno = ETIMEDOUT;
          break;
        }
        ::usleep(1000);
      }
#else
      struct timespec ts;
      ::clock_gettime(CLOCK_REALTIME, &ts);
      long long ns = ts.tv_nsec + static_cast<long long>(ms * 1e6);
      ts.tv_sec += static_cast<time_t>(ns / 1000000000LL);
      ts.tv_nsec = static_cast<long>(ns % 1000000000LL);
      do r = ::sem_timedwait(sem_, &ts);
      while (r < 0 && errno == EINTR);
#endif
    }
    if (r == 0) return Napi::Boolean::New(env, true);
    if (errno == ETIMEDOUT) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, errno, "sem_wait", name_.c_str());
  }

  Napi::Value TryWait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    int r;
    do r = ::sem_trywait(sem_);
    while (r < 0 && errno == EINTR);
    if (r == 0) return Napi::Boolean::New(env, true);
    if (errno == EAGAIN) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, errno, "sem_trywait", name_.c_str());
  }

  Napi::Value Post(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
    if (::sem_post(sem_) < 0) return ThrowErrno(env, errno, "sem_post", name_.c_str());
    return env.Undefined();
  }

  Napi::Value GetValue(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Check(env)) return env.Undefined();
#if defined(__APPLE__)
    // Declared but deprecated and unimplemented there (it would fail with ENOSYS anyway).
    return ThrowErrno(env, ENOSYS, "sem_getvalue", name_.c_str());
#else
    int v = 0;
    if (::sem_getvalue(sem_, &v) < 0) return ThrowErrno(env, errno, "sem_getvalue", name_.c_str());
    return Napi::Number::New(env, v);
#endif
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (sem_ != nullptr) {
      sem_t* s = sem_;
      sem_ = nullptr;
      if (::sem_close(s) < 0) return ThrowErrno(env, errno, "sem_close", name_.c_str());
    }
    return env.Undefined();
  }

  std::string name_;
  sem_t* sem_ = nullptr;
};

Napi::Value SemUnlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "semUnlink(name)", true);
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (::sem_unlink(name.c_str()) < 0) return ThrowErrno(env, errno, "sem_unlink", name.c_str());
  return env.Undefined();
}

}  // namespace

void InitSem(Napi::Env env, Napi::Object exports) {
  exports.Set("NamedSemaphoreHandle", SemHandle::Define(env));
  exports.Set("semUnlink", Napi::Function::New(env, SemUnlink, "semUnlink"));
}

}  // namespace mp

// Exit watching and signals: waitpid (one pid, never -1: that would steal libuv's children),
// kill, pidfd_open, a blocking "wait until readable" with a timeout, and FdWatch, which wakes
// the event loop when an fd becomes readable (a pidfd or a sentinel pipe) through uv_poll —
// never a thread-pool slot per waiter.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "../addon.h"
#include "../errors.h"
#include "fd.h"
#include "fork.h"

namespace mp {

struct WaitState : ModuleState {
  Napi::FunctionReference fdWatchCtor;
};

// waitpid(pid, noHang) -> { pid, status, exitCode, signal } | null (noHang and still running)
static Napi::Value WaitPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const pid_t pid = info[0].As<Napi::Number>().Int32Value();
  const bool noHang = info.Length() > 1 && info[1].ToBoolean().Value();
  int status = 0;
  pid_t r = RetryEintr([&] { return waitpid(pid, &status, noHang ? WNOHANG : 0); });
  if (r < 0) return ThrowErrno(env, errno, "waitpid");
  if (r == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, r));
  o.Set("status", Napi::Number::New(env, status));
  o.Set("exitCode", WIFEXITED(status) ? Napi::Value(Napi::Number::New(env, WEXITSTATUS(status))) : env.Null());
  o.Set("signal", WIFSIGNALED(status) ? Napi::Value(Napi::Number::New(env, WTERMSIG(status))) : env.Null());
  return o;
}

static Napi::Value Kill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const pid_t pid = info[0].As<Napi::Number>().Int32Value();
  const int sig = info[1].As<Napi::Number>().Int32Value();
  if (kill(pid, sig) < 0) return ThrowErrno(env, errno, "kill");
  return env.Undefined();
}

// pidfdOpen(pid) -> fd, or -1 where pidfds do not exist (not Linux, or kernel < 5.3).
// The fd is close-on-exec and becomes readable when the process ends.
static Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(__linux__) && defined(SYS_pidfd_open)
  const pid_t pid = info[0].As<Napi::Number>().Int32Value();
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) return Napi::Number::New(env, static_cast<double>(fd));
  if (errno != ENOSYS) return ThrowErrno(env, errno, "pidfd_open");
#endif
  return Napi::Number::New(env, -1);
}

// waitReadable(fd, timeoutMs | -1 forever) -> true when readable (or hung up), false on timeout.
static Napi::Value WaitReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct pollfd p = {info[0].As<Napi::Number>().Int32Value(), POLLIN, 0};
  const double ms = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int wait = -1;
    if (ms >= 0) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      double elapsed = (now.tv_sec - start.tv_sec) * 1e3 + (now.tv_nsec - start.tv_nsec) / 1e6;
      double left = ms - elapsed;
      wait = left <= 0 ? 0 : static_cast<int>(left + 0.999);
    }
    int r = poll(&p, 1, wait);
    if (r > 0) {
      if (p.revents & POLLNVAL) return ThrowErrno(env, EBADF, "poll");
      return Napi::Boolean::New(env, true);
    }
    if (r == 0) return Napi::Boolean::New(env, false);
    if (errno != EINTR) return ThrowErrno(env, errno, "poll");
  }
}

// new FdWatch(fd, callback): calls callback() (in its own callback scope) each time `fd` is
// readable or hung up, until close(). Referenced by default, like a socket; ref()/unref().
class FdWatch : public Napi::ObjectWrap<FdWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatch",
                       {InstanceMethod<&FdWatch::Close>("close"), InstanceMethod<&FdWatch::Ref>("ref"),
                        InstanceMethod<&FdWatch::Unref>("unref")});
  }

  FdWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatch>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
      ThrowCode(env, "ERR_INVALID_ARG_TYPE", "FdWatch(fd, callback)", true);
      return;
    }
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "multiproc.FdWatch");
    handle_ = new uv_poll_t;
    int r = uv_poll_init(loop, handle_, info[0].As<Napi::Number>().Int32Value());
    if (r == 0) {
      handle_->data = this;
      r = uv_poll_start(handle_, UV_READABLE | UV_DISCONNECT, OnPoll);
      if (r != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
        handle_ = nullptr;
      }
    } else {
      delete handle_;
      handle_ = nullptr;
    }
    if (r != 0) {
      ThrowErrno(env, -r, "uv_poll_start");
      return;
    }
    self_ = Napi::Persistent(info.This().As<Napi::Object>());  // alive while watching
  }

  ~FdWatch() override { CloseHandle(); }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<FdWatch*>(h->data);
    if (self == nullptr) return;
    napi_env env = self->callback_.Env();
    Napi::HandleScope scope(env);
    napi_value global;
    napi_get_global(env, &global);
    napi_status s = napi_make_callback(env, *self->context_, global, self->callback_.Value(), 0, nullptr, nullptr);
    // A Process child forked inside this callback unwinds it by termination: not an error.
    if (s != napi_ok) ReportCallbackFailure(Napi::Env(env));
  }

  void CloseHandle() {
    if (handle_ == nullptr) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    if (!self_.IsEmpty()) self_.Reset();
    return info.Env().Undefined();
  }
  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  uv_poll_t* handle_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::ObjectReference self_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

void InitWait(Napi::Env env, Napi::Object exports) {
  exports.Set("waitpid", Napi::Function::New(env, WaitPid, "waitpid"));
  exports.Set("kill", Napi::Function::New(env, Kill, "kill"));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("waitReadable", Napi::Function::New(env, WaitReadable, "waitReadable"));
  auto st = std::make_unique<WaitState>();
  Napi::Function ctor = FdWatch::Define(env);
  st->fdWatchCtor = Napi::Persistent(ctor);
  GetAddonData(env)->slots[AddonData::kWait] = std::move(st);
  exports.Set("FdWatch", ctor);
}

}  // namespace mp

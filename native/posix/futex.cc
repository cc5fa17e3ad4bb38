// Cross-process waiting on 32-bit words in shared memory.
//
// V8's Atomics.wait/notify only reach threads of one process (DESIGN.md fact 6). Here:
//   futexWait / futexWake   blocking wait and wake on a word (Linux: FUTEX_WAIT/FUTEX_WAKE
//                           without FUTEX_PRIVATE_FLAG, so the key is the shared page, not the mm)
//   waitAsync / waitCancel  non-blocking registration "tell me when this word != expected",
//                           served by ONE native waiter thread per process and environment;
//                           results reach the event loop through an fd that libuv polls
//   pidAlive                owner liveness for robust locks
// The policy (what a word means, timeouts, AbortSignal, owner death) is in lib/_wait.ts and
// lib/synchronize.ts; timeouts of async waits are JS timers + waitCancel.
//
// Waiter thread (Linux): futex_waitv(2) sleeps on up to 128 words at once: one private control
// word `ctl` that the JS thread bumps whenever the set changes, plus up to 127 registered words.
// Beyond 127 registrations the thread also wakes every 2 ms and rescans (documented
// degradation). Without futex_waitv (kernel < 5.16) or on macOS it polls every 1 ms.
//
// fork(): a child has no waiter thread and inherits the parent's state mid-flight. Every entry
// point compares getpid() with the pid that started the thread; in a child the inherited state
// is abandoned (never joined, mutex re-initialised, the parent's registrations dropped, the
// inherited poll handle closed without reading: the eventfd is shared with the parent, and a read
// here would steal the parent's wake-up) and a fresh thread is started on first use. `epoch`
// counts these restarts so JS can drop registrations it made before the fork.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <climits>
#include <cstdint>
#include <vector>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/eventfd.h>
// futex_waitv(2) (Linux 5.16), spelled out so that older kernel headers still compile: the
// struct layout, the flags and the syscall number (449 in the unified table) are kernel ABI.
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
namespace mp {
struct WaitV {
  uint64_t val;
  uint64_t uaddr;
  uint32_t flags;
  uint32_t reserved;
};
constexpr uint32_t kWaitvU32 = 2;            // FUTEX_32
constexpr uint32_t kWaitvPrivate = 128;      // FUTEX_PRIVATE_FLAG
constexpr size_t kWaitvMax = 128;            // FUTEX_WAITV_MAX
}  // namespace mp
#endif

#include "../addon.h"
#include "../errors.h"
#include "fork.h"
#include "fd.h"

#if defined(__APPLE__)
// Darwin's futex equivalent (used by libc++'s std::atomic::wait). UL_COMPARE_AND_WAIT_SHARED
// keys the wait on the physical page, so it works across processes on MAP_SHARED memory.
extern "C" int __ulock_wait(uint32_t operation, void* addr, uint64_t value, uint32_t timeout_us);
extern "C" int __ulock_wake(uint32_t operation, void* addr, uint64_t wake_value);
#define MP_UL_COMPARE_AND_WAIT_SHARED 3u
#define MP_ULF_WAKE_ALL 0x100u
#endif

namespace mp {

namespace {

// ---------------------------------------------------------------- the OS primitives

enum WaitResult { kWoken = 0, kNotEqual = 1, kTimedOut = 2 };

// Blocks while *addr == expected, at most `ms` milliseconds (ms < 0: no limit). EINTR counts as
// a (spurious) wake-up: callers always re-check the word.
int WordWait(int32_t* addr, int32_t expected, double ms) {
#if defined(__linux__)
  struct timespec ts, *pts = nullptr;
  if (ms >= 0) {
    ts.tv_sec = static_cast<time_t>(ms / 1000);
    ts.tv_nsec = static_cast<long>((ms - static_cast<double>(ts.tv_sec) * 1000.0) * 1e6);
    pts = &ts;
  }
  long r = ::syscall(SYS_futex, addr, FUTEX_WAIT, expected, pts, nullptr, 0);
  if (r == 0) return kWoken;
  if (errno == EAGAIN) return kNotEqual;
  if (errno == ETIMEDOUT) return kTimedOut;
  return kWoken;
#elif defined(__APPLE__)
  if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) != expected) return kNotEqual;
  // timeout 0 means "forever" to ulock: clamp a zero wait to 1 us.
  uint32_t us = ms < 0 ? 0 : (ms * 1000 >= UINT32_MAX ? UINT32_MAX - 1 : static_cast<uint32_t>(ms * 1000) + 1);
  int r = __ulock_wait(MP_UL_COMPARE_AND_WAIT_SHARED, addr, static_cast<uint32_t>(expected), us);
  if (r < 0 && errno == ETIMEDOUT) return kTimedOut;
  return kWoken;
#else
  // Any other POSIX: poll the word (obviously correct, not fast).
  double waited = 0;
  while (__atomic_load_n(addr, __ATOMIC_SEQ_CST) == expected) {
    if (ms >= 0 && waited >= ms) return kTimedOut;
    ::usleep(500);
    waited += 0.5;
  }
  return kWoken;
#endif
}

int WordWake(int32_t* addr, int count) {
#if defined(__linux__)
  long r = ::syscall(SYS_futex, addr, FUTEX_WAKE, count, nullptr, nullptr, 0);
  return r < 0 ? 0 : static_cast<int>(r);
#elif defined(__APPLE__)
  __ulock_wake(MP_UL_COMPARE_AND_WAIT_SHARED | (count > 1 ? MP_ULF_WAKE_ALL : 0u), addr, 0);
  return 0;  // ulock does not report how many it woke
#else
  (void)addr;
  (void)count;
  return 0;
#endif
}

// Is `pid` a live process? A zombie (killed but not yet reaped) counts as dead: its lock must be
// recoverable before its parent gets round to reaping it.
bool PidAlive(pid_t pid) {
  if (pid <= 0) return false;
#if defined(__linux__) && defined(SYS_pidfd_open)
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    UniqueFd pfd(fd);
    // A pidfd becomes readable when the process has exited (zombie or reaped).
    struct pollfd p = {fd, POLLIN, 0};
    int r = RetryEintr([&] { return ::poll(&p, 1, 0); });
    return !(r > 0 && (p.revents & (POLLIN | POLLHUP)));
  }
  if (errno == ESRCH) return false;
  // ENOSYS (kernel < 5.3) or EMFILE: fall back to kill(0), which sees a zombie as alive.
#endif
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

// ---------------------------------------------------------------- the waiter thread

struct Registration {
  uint32_t id;
  int32_t* addr;
  int32_t expected;
};

// Heap-allocated so that libuv's close callback can free it after the state is gone.
struct PollBox {
  uv_poll_t handle;
  int fd;           // read side (eventfd, or pipe read end)
  struct Waiter* owner;  // null once the state has let go of it
};

struct Waiter : public ModuleState {
  napi_env env = nullptr;
  napi_ref callback = nullptr;         // JS (ids: number[]) => void
  napi_async_context async_ctx = nullptr;

  pthread_mutex_t mu;
#if !defined(__linux__)
  pthread_cond_t cv;
#endif
  // Guarded by mu:
  std::vector<Registration> pending;   // words the thread sleeps on
  std::vector<uint32_t> done;          // ids whose word changed, not yet delivered to JS
  bool stop = false;
  // Bumped (under mu) by the JS thread on every change of `pending` or `stop`, then woken:
  // the thread sleeps on it together with the registered words, so a change made between its
  // last scan and its sleep makes futex_waitv return at once (value mismatch): no lost wake-up.
  int32_t ctl = 0;

  bool running = false;                // a thread was started by `owner_pid`
  pthread_t thread;
  pid_t owner_pid = 0;
  // Thread -> loop: the eventfd itself (Linux; owned by the poll box, which closes it) or the
  // write end of a pipe (owned here).
  int notify_fd = -1;
  bool notify_fd_owned = false;
  PollBox* poll = nullptr;
  uint32_t epoch = 0;
  bool use_waitv = true;

  Waiter() {
    pthread_mutex_init(&mu, nullptr);
#if !defined(__linux__)
    pthread_cond_init(&cv, nullptr);
#endif
  }
  ~Waiter() override { Shutdown(); }

  void Lock() { pthread_mutex_lock(&mu); }
  void Unlock() { pthread_mutex_unlock(&mu); }

  // Called with mu held: wake the thread so it rebuilds its wait set.
  void KickLocked() {
    ctl++;
#if defined(__linux__)
    ::syscall(SYS_futex, &ctl, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
#else
    pthread_cond_signal(&cv);
#endif
  }

  // Thread -> loop. Non-blocking; a full pipe / saturated eventfd already means "pending".
  void SignalLoop() {
#if defined(__linux__)
    uint64_t one = 1;
    ssize_t r = RetryEintr([&] { return ::write(notify_fd, &one, sizeof one); });
#else
    char one = 1;
    ssize_t r = RetryEintr([&] { return ::write(notify_fd, &one, 1); });
#endif
    (void)r;
  }

  // Moves every registration whose word no longer holds `expected` to `done`. mu held. The words
  // are mapped: JS keeps each registered buffer reachable until the id is delivered or cancelled,
  // and both happen under mu.
  bool ScanLocked() {
    bool fired = false;
    size_t j = 0;
    for (size_t i = 0; i < pending.size(); i++) {
      const Registration& r = pending[i];
      if (__atomic_load_n(r.addr, __ATOMIC_SEQ_CST) != r.expected) {
        done.push_back(r.id);
        fired = true;
      } else {
        pending[j++] = r;
      }
    }
    pending.resize(j);
    return fired;
  }

  static void* Main(void* arg) {
    static_cast<Waiter*>(arg)->Loop();
    return nullptr;
  }

  void Loop() {
#if defined(__linux__)
    std::vector<WaitV> v;
    v.reserve(kWaitvMax);
#endif
    Lock();
    while (!stop) {
      if (ScanLocked()) SignalLoop();
#if defined(__linux__)
      const int32_t seen = ctl;
      const bool overflow = pending.size() > kWaitvMax - 1;
      if (use_waitv) {
        v.clear();
        v.push_back({static_cast<uint64_t>(static_cast<uint32_t>(seen)), reinterpret_cast<uintptr_t>(&ctl),
                     kWaitvU32 | kWaitvPrivate, 0});
        for (size_t i = 0; i < pending.size() && v.size() < kWaitvMax; i++)
          v.push_back({static_cast<uint64_t>(static_cast<uint32_t>(pending[i].expected)),
                       reinterpret_cast<uintptr_t>(pending[i].addr), kWaitvU32, 0});
      }
      Unlock();
      // Lost wake-ups: the scan above saw every word equal to its expected value, and the kernel
      // compares each word with that same value atomically with going to sleep, so a change made
      // after the scan (and its FUTEX_WAKE) makes futex_waitv fail with EAGAIN or return at once.
      // Any outcome (woken, EAGAIN = a word already differs, ETIMEDOUT, EINTR, EFAULT = a
      // cancelled buffer was unmapped meanwhile) leads to a rescan under the lock.
      long r = -1;
      if (use_waitv) {
        struct timespec abs, *pabs = nullptr;
        if (overflow) {
          ::clock_gettime(CLOCK_MONOTONIC, &abs);
          abs.tv_nsec += 2 * 1000 * 1000;
          if (abs.tv_nsec >= 1000000000L) abs.tv_sec++, abs.tv_nsec -= 1000000000L;
          pabs = &abs;
        }
        r = ::syscall(SYS_futex_waitv, v.data(), v.size(), 0, pabs, CLOCK_MONOTONIC);
        if (r < 0 && errno == ENOSYS) use_waitv = false;
      }
      if (!use_waitv) {
        struct timespec rel = {0, 1000 * 1000};
        ::syscall(SYS_futex, &ctl, FUTEX_WAIT_PRIVATE, seen, &rel, nullptr, 0);
      }
      Lock();
#else
      if (pending.empty()) {
        pthread_cond_wait(&cv, &mu);
      } else {
        struct timespec abs;
        ::clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_nsec += 1000 * 1000;
        if (abs.tv_nsec >= 1000000000L) abs.tv_sec++, abs.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&cv, &mu, &abs);
      }
#endif
    }
    Unlock();
  }

  // ---- JS-thread side

  static void OnPoll(uv_poll_t* h, int status, int events) {
    PollBox* box = static_cast<PollBox*>(h->data);
    Waiter* self = box->owner;
    if (self == nullptr) return;
    if (self->owner_pid != ::getpid()) {
      // Forked child: this handle and fd belong to the parent's thread. Do not read.
      self->AbandonAfterFork();
      return;
    }
    // Drain the eventfd / pipe (non-blocking).
    char buf[64];
    while (RetryEintr([&] { return ::read(box->fd, buf, sizeof buf); }) > 0) {
    }
    self->Deliver();
  }

  void Deliver() {
    std::vector<uint32_t> ids;
    Lock();
    ids.swap(done);
    bool idle = pending.empty();
    Unlock();
    if (idle && poll != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&poll->handle));
    if (ids.empty() || callback == nullptr) return;
    Napi::Env e(env);
    Napi::HandleScope scope(e);
    Napi::Array arr = Napi::Array::New(e, ids.size());
    for (size_t i = 0; i < ids.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(e, ids[i]));
    napi_value fn, recv = e.Global(), argv[1] = {arr}, result;
    napi_get_reference_value(env, callback, &fn);
    napi_status st = napi_make_callback(env, async_ctx, recv, fn, 1, argv, &result);
    // The callback resolves promises, and their continuations may fork(): a Process child then
    // unwinds this very call by V8 termination (the pending "exception" is that termination, not
    // an error), which ReportCallbackFailure drops.
    if (st != napi_ok) ReportCallbackFailure(Napi::Env(env));
  }

  static void OnClose(uv_handle_t* h) {
    PollBox* box = static_cast<PollBox*>(h->data);
    if (box->fd >= 0) ::close(box->fd);
    delete box;
  }

  void ClosePoll() {
    if (poll == nullptr) return;
    poll->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle), OnClose);  // closes the read fd too
    poll = nullptr;
  }

  // In a forked child: forget the parent's thread (it does not exist here; never join it) and
  // everything it was serving. The mutex may have been held by that thread at fork time.
  void AbandonAfterFork() {
    pthread_mutex_init(&mu, nullptr);
#if !defined(__linux__)
    pthread_cond_init(&cv, nullptr);
#endif
    pending.clear();
    done.clear();
    stop = false;
    running = false;
    ClosePoll();
    CloseNotifyFd();  // our copies only; the parent's stay open
    owner_pid = 0;
  }

  // Starts the thread and the loop-side handle in this process if not yet running. false (with
  // a pending JS exception) on failure.
  bool EnsureRunning(Napi::Env e) {
    pid_t me = ::getpid();
    if (owner_pid == me && running) return true;
    if (owner_pid != 0 && owner_pid != me) AbandonAfterFork();
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(e, &loop) != napi_ok || loop == nullptr) {
      ThrowCode(e, "ERR_MP_RUNTIME", "no event loop");
      return false;
    }
    int rfd, wfd;
#if defined(__linux__)
    rfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rfd < 0) {
      ThrowErrno(e, errno, "eventfd");
      return false;
    }
    wfd = rfd;  // the poll box owns the one fd; notify_fd aliases it
#else
    int fds[2];
    if (::pipe(fds) < 0) {
      ThrowErrno(e, errno, "pipe");
      return false;
    }
    for (int fd : fds) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    rfd = fds[0];
    wfd = fds[1];
#endif
    PollBox* box = new PollBox();
    box->fd = rfd;
    box->owner = this;
    box->handle.data = box;
    int ur = uv_poll_init(loop, &box->handle, rfd);
    if (ur == 0) ur = uv_poll_start(&box->handle, UV_READABLE, OnPoll);
    if (ur != 0) {
      ::close(rfd);
      if (wfd != rfd) ::close(wfd);
      delete box;
      ThrowErrno(e, -ur, "uv_poll_start");
      return false;
    }
    uv_unref(reinterpret_cast<uv_handle_t*>(&box->handle));
    poll = box;
    notify_fd = wfd;
    notify_fd_owned = wfd != rfd;
    stop = false;
    int pr = pthread_create(&thread, nullptr, Main, this);
    if (pr != 0) {
      ClosePoll();
      CloseNotifyFd();
      ThrowErrno(e, pr, "pthread_create");
      return false;
    }
    running = true;
    owner_pid = me;
    epoch++;
    return true;
  }

  // Env teardown (and destructor): stop and join the thread if this process started it.
  void Shutdown() {
    if (running && owner_pid == ::getpid()) {
      Lock();
      stop = true;
      KickLocked();
      Unlock();
      pthread_join(thread, nullptr);
    }
    running = false;
    ClosePoll();
    CloseNotifyFd();
  }

  void CloseNotifyFd() {
    if (notify_fd >= 0 && notify_fd_owned) ::close(notify_fd);
    notify_fd = -1;
    notify_fd_owned = false;
  }
};

Waiter* GetWaiter(Napi::Env env) {
  AddonData* d = GetAddonData(env);
  return d->Get<Waiter>(AddonData::kSync);
}

// ---------------------------------------------------------------- bindings

// (Int32Array over shared memory, index) -> word address, or nullptr with a pending TypeError.
int32_t* WordAt(Napi::Env env, const Napi::Value& arr, const Napi::Value& index) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (!arr.IsTypedArray() ||
      napi_get_typedarray_info(env, arr, &type, &length, &data, nullptr, nullptr) != napi_ok ||
      type != napi_int32_array || data == nullptr) {
    ThrowCode(env, "ERR_INVALID_ARG_TYPE", "expected an Int32Array", true);
    return nullptr;
  }
  if (!index.IsNumber()) {
    ThrowCode(env, "ERR_INVALID_ARG_TYPE", "expected an index", true);
    return nullptr;
  }
  double i = index.As<Napi::Number>().DoubleValue();
  if (!(i >= 0 && i < static_cast<double>(length) && i == static_cast<double>(static_cast<size_t>(i)))) {
    ThrowCode(env, "ERR_OUT_OF_RANGE", "word index out of range", true);
    return nullptr;
  }
  return static_cast<int32_t*>(data) + static_cast<size_t>(i);
}

// futexWait(i32, index, expected, timeoutMs) -> 0 woken (or spurious), 1 not equal, 2 timed out.
// timeoutMs < 0: no limit. Blocks the calling thread.
Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* addr = WordAt(env, info[0], info[1]);
  if (addr == nullptr) return env.Undefined();
  int32_t expected = info[2].ToNumber().Int32Value();
  double ms = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : -1;
  return Napi::Number::New(env, WordWait(addr, expected, ms));
}

// futexWake(i32, index, count) -> number woken (0 where the OS does not say).
Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* addr = WordAt(env, info[0], info[1]);
  if (addr == nullptr) return env.Undefined();
  double c = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : INT_MAX;
  int count = c >= INT_MAX ? INT_MAX : (c < 1 ? 1 : static_cast<int>(c));
  return Napi::Number::New(env, WordWake(addr, count));
}

// waiterInit(callback): the function that receives delivered ids (an array of numbers).
Napi::Value WaiterInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "expected a function", true);
  Waiter* w = GetWaiter(env);
  if (w->callback != nullptr) napi_delete_reference(env, w->callback);
  napi_create_reference(env, info[0], 1, &w->callback);
  if (w->async_ctx == nullptr) {
    napi_value name = Napi::String::New(env, "multiproc.wait");
    napi_async_init(env, nullptr, name, &w->async_ctx);
  }
  return env.Undefined();
}

// waitAsync(i32, index, expected, id) -> epoch. The id is delivered to the callback once the word
// differs from `expected` (possibly at once). The caller keeps `i32` reachable until then or
// until waitCancel(id). While registrations are pending the poll handle keeps the loop alive.
Napi::Value WaitAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* addr = WordAt(env, info[0], info[1]);
  if (addr == nullptr) return env.Undefined();
  int32_t expected = info[2].ToNumber().Int32Value();
  uint32_t id = info[3].ToNumber().Uint32Value();
  Waiter* w = GetWaiter(env);
  if (!w->EnsureRunning(env)) return env.Undefined();
  w->Lock();
  w->pending.push_back({id, addr, expected});
  w->KickLocked();
  w->Unlock();
  uv_ref(reinterpret_cast<uv_handle_t*>(&w->poll->handle));
  return Napi::Number::New(env, w->epoch);
}

// waitCancel(id) -> true if the registration was still pending (it will not be delivered).
Napi::Value WaitCancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].ToNumber().Uint32Value();
  Waiter* w = GetWaiter(env);
  if (!w->running || w->owner_pid != ::getpid()) return Napi::Boolean::New(env, false);
  bool found = false;
  w->Lock();
  for (size_t i = 0; i < w->pending.size(); i++) {
    if (w->pending[i].id == id) {
      w->pending.erase(w->pending.begin() + static_cast<std::ptrdiff_t>(i));
      found = true;
      break;
    }
  }
  // A delivered-but-not-yet-dispatched id is dropped too: the caller no longer wants it.
  for (size_t i = 0; !found && i < w->done.size(); i++) {
    if (w->done[i] == id) {
      w->done.erase(w->done.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (found) w->KickLocked();
  bool idle = w->pending.empty() && w->done.empty();
  w->Unlock();
  if (idle && w->poll != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll->handle));
  return Napi::Boolean::New(env, found);
}

// waiterEpoch() -> the current epoch (changes when a forked child restarts the machinery).
Napi::Value WaiterEpoch(const Napi::CallbackInfo& info) {
  Waiter* w = GetWaiter(info.Env());
  bool current = w->running && w->owner_pid == ::getpid();
  return Napi::Number::New(info.Env(), current ? w->epoch : 0);
}

Napi::Value PidAliveJS(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) return ThrowCode(env, "ERR_INVALID_ARG_TYPE", "expected a pid", true);
  return Napi::Boolean::New(env, PidAlive(info[0].As<Napi::Number>().Int32Value()));
}

void Cleanup(void* arg) { static_cast<Waiter*>(arg)->Shutdown(); }

}  // namespace

void InitFutex(Napi::Env env, Napi::Object exports) {
  AddonData* d = GetAddonData(env);
  auto* w = new Waiter();
  w->env = env;
  d->slots[AddonData::kSync].reset(w);
  // Stop and join the waiter thread when this environment is torn down (main exit or a Worker
  // ending), before the loop and the instance data go away. Runs before the instance data
  // finalizer (hooks run in reverse order of registration).
  napi_add_env_cleanup_hook(env, Cleanup, w);
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("waiterInit", Napi::Function::New(env, WaiterInit, "waiterInit"));
  exports.Set("waitAsync", Napi::Function::New(env, WaitAsync, "waitAsync"));
  exports.Set("waitCancel", Napi::Function::New(env, WaitCancel, "waitCancel"));
  exports.Set("waiterEpoch", Napi::Function::New(env, WaiterEpoch, "waiterEpoch"));
  exports.Set("pidAlive", Napi::Function::New(env, PidAliveJS, "pidAlive"));
}

}  // namespace mp

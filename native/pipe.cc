// Pipes, socket pairs and descriptor plumbing (pipe2, socketpair, close, dup2, O_NONBLOCK, CLOEXEC).
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addon.h"
#include "errors.h"
#include "fd.h"

namespace mp {

[[maybe_unused]] static bool SetCloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  return flags >= 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0;
}

static Napi::Value PairToArray(Napi::Env env, UniqueFd& a, UniqueFd& b) {
  Napi::Array arr = Napi::Array::New(env, 2);
  arr.Set(0u, Napi::Number::New(env, a.Release()));
  arr.Set(1u, Napi::Number::New(env, b.Release()));
  return arr;
}

// pipe() -> [readFd, writeFd], both close-on-exec (a forked child inherits them; an exec'd
// program does not, unless dup2'd).
static Napi::Value Pipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
#ifdef __linux__
  if (pipe2(fds, O_CLOEXEC) < 0) return ThrowErrno(env, errno, "pipe");
  UniqueFd r(fds[0]), w(fds[1]);
#else
  // Race: without pipe2 another thread could fork+exec between pipe() and FD_CLOEXEC; this
  // addon never execs from another thread, and child_process sets CLOEXEC-independent fds.
  if (pipe(fds) < 0) return ThrowErrno(env, errno, "pipe");
  UniqueFd r(fds[0]), w(fds[1]);
  if (!SetCloexec(r.Get()) || !SetCloexec(w.Get())) return ThrowErrno(env, errno, "fcntl");
#endif
  return PairToArray(env, r, w);
}

// socketpair() -> [a, b]: a connected AF_UNIX stream pair, close-on-exec.
static Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
#ifdef SOCK_CLOEXEC
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return ThrowErrno(env, errno, "socketpair");
  UniqueFd a(fds[0]), b(fds[1]);
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) return ThrowErrno(env, errno, "socketpair");
  UniqueFd a(fds[0]), b(fds[1]);
  if (!SetCloexec(a.Get()) || !SetCloexec(b.Get())) return ThrowErrno(env, errno, "fcntl");
#endif
  return PairToArray(env, a, b);
}

static Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (close(fd) < 0 && errno != EINTR) return ThrowErrno(env, errno, "close");
  return env.Undefined();
}

// dup2(oldfd, newfd) -> newfd. The new descriptor is not close-on-exec (as dup2 in C).
static Napi::Value Dup2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a = info[0].As<Napi::Number>().Int32Value(), b = info[1].As<Napi::Number>().Int32Value();
  int r = RetryEintr([&] { return dup2(a, b); });
  if (r < 0) return ThrowErrno(env, errno, "dup2");
  return Napi::Number::New(env, r);
}

// setBlocking(fd, blocking)
static Napi::Value SetBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  bool blocking = info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return ThrowErrno(env, errno, "fcntl");
  flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
  if (fcntl(fd, F_SETFL, flags) < 0) return ThrowErrno(env, errno, "fcntl");
  return env.Undefined();
}

void InitPipe(Napi::Env env, Napi::Object exports) {
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("dup2", Napi::Function::New(env, Dup2, "dup2"));
  exports.Set("setBlocking", Napi::Function::New(env, SetBlocking, "setBlocking"));
}

}  // namespace mp

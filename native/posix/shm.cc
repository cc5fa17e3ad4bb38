// POSIX shared memory: shm_open / ftruncate / mmap / shm_unlink, and anonymous shared mappings,
// exposed to JS as real SharedArrayBuffers.
//
// A mapping becomes a V8 SharedArrayBuffer through SharedArrayBuffer::NewBackingStore with a
// deleter that munmaps it: `Atomics` works on it, it can be posted to worker_threads (the
// backing store is shared, not copied), and the mapping lives exactly as long as the last
// SharedArrayBuffer (in any isolate of this process) that refers to it. That V8 entry point is
// not part of Node-API, which is why the addon builds against Node's C++ headers. MAP_SHARED
// mappings are inherited by fork(), so a buffer created before fork keeps working in the child
// at the same address.
//
// Policy (names, sizes, modes, tracking, cleanup on failure) lives in lib/shared_memory.ts and
// lib/posix.ts; these are thin errno-checked wrappers.
#include <dlfcn.h>
#include <fcntl.h>
#include <node.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <v8.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "../addon.h"
#include "../errors.h"
#include "fd.h"

namespace mp {

namespace {

// V8 handle -> napi_value. napi_value is a v8::Local<v8::Value> in Node's implementation (Node's
// own v8impl::JsValueFromV8LocalValue is this cast); the layout is checked at compile time.
static_assert(sizeof(v8::Local<v8::Value>) == sizeof(napi_value), "napi_value and v8::Local differ");
napi_value FromV8(v8::Local<v8::Value> l) { return reinterpret_cast<napi_value>(*l); }

void Unmap(void* data, size_t length, void* /*deleter_data*/) {
  // Called by V8 when the last SharedArrayBuffer over this backing store is collected (possibly
  // on a GC thread): munmap is thread-safe.
  if (data != nullptr && length > 0) ::munmap(data, length);
}

bool IsInt(const Napi::Value& v) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  return d == static_cast<double>(static_cast<int64_t>(d));
}

Napi::Value BadArg(Napi::Env env, const char* what) {
  return ThrowCode(env, "ERR_INVALID_ARG_TYPE", std::string("invalid argument: ") + what, true);
}

// shmOpen(name, flags, mode) -> fd. `flags` are the O_* values exported in `shmFlags`; the fd is
// close-on-exec (shm_open sets FD_CLOEXEC itself).
Napi::Value ShmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !IsInt(info[1]) || !IsInt(info[2])) return BadArg(env, "shmOpen(name, flags, mode)");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int flags = info[1].As<Napi::Number>().Int32Value();
  mode_t mode = static_cast<mode_t>(info[2].As<Napi::Number>().Uint32Value());
  int fd = RetryEintr([&] { return ::shm_open(name.c_str(), flags, mode); });
  if (fd < 0) return ThrowErrno(env, errno, "shm_open", name.c_str());
  return Napi::Number::New(env, fd);
}

Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return BadArg(env, "shmUnlink(name)");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (::shm_unlink(name.c_str()) < 0) return ThrowErrno(env, errno, "shm_unlink", name.c_str());
  return env.Undefined();
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsInt(info[0]) || !IsInt(info[1])) return BadArg(env, "ftruncate(fd, size)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  off_t size = static_cast<off_t>(info[1].As<Napi::Number>().Int64Value());
  if (RetryEintr([&] { return ::ftruncate(fd, size); }) < 0) return ThrowErrno(env, errno, "ftruncate");
  return env.Undefined();
}

// mmap(fd, size, offset, private?) -> SharedArrayBuffer over a MAP_SHARED, read-write mapping of `fd`
// (fd -1: anonymous shared memory, inherited by fork()). The fd may be closed afterwards.
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsInt(info[0]) || !IsInt(info[1]) || !IsInt(info[2])) return BadArg(env, "mmap(fd, size, offset)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t size = info[1].As<Napi::Number>().Int64Value();
  int64_t offset = info[2].As<Napi::Number>().Int64Value();
  if (size <= 0 || offset < 0) return ThrowErrno(env, EINVAL, "mmap");
  // Optional 4th argument true: a private copy-on-write mapping (changes stay in this process and
  // its later fork children see a snapshot) instead of a shared one.
  const bool priv = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  int flags = (priv ? MAP_PRIVATE : MAP_SHARED) | (fd < 0 ? MAP_ANONYMOUS : 0);
  void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  // From here on V8 owns the mapping: the deleter unmaps it when the buffer is collected.
  std::unique_ptr<v8::BackingStore> store =
      v8::SharedArrayBuffer::NewBackingStore(p, static_cast<size_t>(size), Unmap, nullptr);
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(store));
  return Napi::Value(env, FromV8(sab));
}

// fstatSize(fd) -> st_size (the size a segment was truncated to).
Napi::Value FstatSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsInt(info[0])) return BadArg(env, "fstatSize(fd)");
  struct stat st;
  if (::fstat(info[0].As<Napi::Number>().Int32Value(), &st) < 0) return ThrowErrno(env, errno, "fstat");
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsInt(info[0])) return BadArg(env, "closeFd(fd)");
  // Not retried on EINTR (see UniqueFd::Reset).
  if (::close(info[0].As<Napi::Number>().Int32Value()) < 0 && errno != EINTR) return ThrowErrno(env, errno, "close");
  return env.Undefined();
}

// lifelinePipe() -> [read, write], both close-on-exec: the resource tracker's lifeline (its EOF
// tells the tracker every writer has gone). Close-on-exec keeps exec'd programs from holding it
// open; forked children inherit it on purpose (they share the parent's tracker, as in CPython).
Napi::Value LifelinePipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
#ifdef __linux__
  if (::pipe2(fds, O_CLOEXEC) < 0) return ThrowErrno(env, errno, "pipe2");
#else
  // No pipe2: the window between pipe() and fcntl() only matters if another thread forks+execs
  // meanwhile; the JS thread is the only one that calls this.
  if (::pipe(fds) < 0) return ThrowErrno(env, errno, "pipe");
  ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  ::fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
  // A program that closed its stdio would get fds 0-2 here: its later writes to stdout/stderr
  // would go down the lifeline, and a child given them as stdio would hold the write end open.
  for (int& fd : fds) {
    if (fd > 2) continue;
    const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (high < 0) {
      const int err = errno;
      ::close(fds[0]);
      ::close(fds[1]);
      return ThrowErrno(env, err, "fcntl");
    }
    ::close(fd);
    fd = high;
  }
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(uint32_t{0}, Napi::Number::New(env, fds[0]));
  a.Set(uint32_t{1}, Napi::Number::New(env, fds[1]));
  return a;
}

}  // namespace

// The deleter above is code in this shared object, and V8 calls it whenever the last buffer over
// a mapping dies: possibly at the teardown of a Worker's isolate after Node has dlclose()d an addon
// that only that Worker had loaded, or in another thread the buffer was posted to. So this object
// must never be unloaded: re-open it with RTLD_NODELETE (pins it for the life of the process).
static void PinThisLibrary() {
  Dl_info info;
  if (::dladdr(reinterpret_cast<void*>(&Unmap), &info) != 0 && info.dli_fname != nullptr) {
    void* self = ::dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    (void)self;  // the extra reference is never released, on purpose
  }
}

void InitShm(Napi::Env env, Napi::Object exports) {
  PinThisLibrary();
  exports.Set("shmOpen", Napi::Function::New(env, ShmOpen, "shmOpen"));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink, "shmUnlink"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("fstatSize", Napi::Function::New(env, FstatSize, "fstatSize"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("lifelinePipe", Napi::Function::New(env, LifelinePipe, "lifelinePipe"));
  Napi::Object flags = Napi::Object::New(env);
  flags.Set("O_RDONLY", Napi::Number::New(env, O_RDONLY));
  flags.Set("O_RDWR", Napi::Number::New(env, O_RDWR));
  flags.Set("O_CREAT", Napi::Number::New(env, O_CREAT));
  flags.Set("O_EXCL", Napi::Number::New(env, O_EXCL));
  flags.Set("O_TRUNC", Napi::Number::New(env, O_TRUNC));
  exports.Set("shmFlags", flags);
}

}  // namespace mp
